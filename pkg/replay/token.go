package replay

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"math/big"
	"strings"
	"time"
)

// ControlAudience is the audience of the tokens that open the control API
// of the sidecar in the pod with this namespace and UID. The manager asks
// the API server for a token of that audience before each call to a pod
// (TokenRequest), and the sidecar accepts no other: a token a sidecar
// receives opens that sidecar only, and the API server refuses it (its own
// audience is the issuer's), so whoever runs a fake sidecar receives
// nothing of use.
func ControlAudience(namespace, uid string) string {
	return "ms2m-replay/" + namespace + "/" + uid
}

// MaxTokenBytes bounds a bearer token before it is parsed; service-account
// tokens are about 1 KiB.
const MaxTokenBytes = 16 << 10

// tokenLeeway is the clock skew allowed between the API server that issued
// a token and the node checking it.
const tokenLeeway = 30 * time.Second

// Claims are what the sidecar reads of a verified token.
type Claims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Audience  audience `json:"aud"`
	Expiry    *numeric `json:"exp"`
	NotBefore *numeric `json:"nbf"`
	// Kubernetes is the API server's private claim: for a token bound to
	// a pod, the pod's node (kube-apiserver 1.32+, ServiceAccountTokenPodNodeInfo).
	Kubernetes *struct {
		Node *struct {
			Name string `json:"name"`
		} `json:"node"`
	} `json:"kubernetes.io"`
}

// Identity is who presented a verified token.
type Identity struct {
	User string
	// Node is the node of the pod the token is bound to; "" when it is
	// bound to none.
	Node string
}

// audience is a JWT "aud": one string or a list of them (RFC 7519 4.1.3).
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New(`"aud" is neither a string nor a list of strings`)
	}
	*a = many
	return nil
}

// numeric is a JWT NumericDate: seconds since the epoch, possibly with a
// fraction.
type numeric float64

func (n *numeric) time() time.Time {
	s := float64(*n)
	return time.Unix(int64(s), int64((s-float64(int64(s)))*1e9))
}

// TokenVerifier authenticates the manager's tokens offline: a JSON Web
// Token signed by one of the cluster's service-account issuer keys (which
// every service account may read, see IssuerKeys), issued by that issuer,
// for Audience, and not expired. It needs no cluster role: the app's
// service account does not become a TokenReview oracle. What it gives up
// against a TokenReview: a token stays valid until it expires (at most
// the 10 minutes the manager asks for) even if the manager's service
// account is deleted meanwhile.
type TokenVerifier struct {
	Audience string
	Keys     KeySource
	// Now defaults to time.Now.
	Now func() time.Time
}

// KeySource gives the service-account issuer and its public keys. Refresh
// asks again (a key the source does not know may be newly rotated in); it
// may answer from its cache when asked too often.
type KeySource interface {
	Keys(ctx context.Context) (issuer string, keys []JWK, err error)
	Refresh(ctx context.Context) (issuer string, keys []JWK, err error)
}

// Authenticate implements Authenticator: the token's subject (and the
// node of the pod it is bound to) once the token is verified.
func (v *TokenVerifier) Authenticate(ctx context.Context, token string) (Identity, error) {
	if v.Audience == "" {
		return Identity{}, errors.New("the sidecar knows no audience to accept")
	}
	jwt, err := parseJWT(token)
	if err != nil {
		return Identity{}, err
	}
	issuer, keys, err := v.Keys.Keys(ctx)
	if err != nil {
		return Identity{}, fmt.Errorf("service-account issuer keys: %w", err)
	}
	if !jwt.signedByOneOf(keys) {
		// A key rotated in since the keys were read: read them again.
		if issuer, keys, err = v.Keys.Refresh(ctx); err != nil {
			return Identity{}, fmt.Errorf("service-account issuer keys: %w", err)
		}
		if !jwt.signedByOneOf(keys) {
			return Identity{}, errors.New("token not signed by the cluster's service-account issuer")
		}
	}
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	return jwt.claims.check(issuer, v.Audience, now)
}

func (c *Claims) check(issuer, aud string, now time.Time) (Identity, error) {
	if c.Issuer != issuer {
		return Identity{}, fmt.Errorf("token issued by %q, not by the cluster's issuer %q", c.Issuer, issuer)
	}
	found := false
	for _, a := range c.Audience {
		found = found || a == aud
	}
	if !found {
		return Identity{}, fmt.Errorf("token is for %q, not for this sidecar (%s)", strings.Join(c.Audience, ", "), aud)
	}
	if c.Expiry == nil {
		return Identity{}, errors.New("token has no expiry")
	}
	if now.After(c.Expiry.time().Add(tokenLeeway)) {
		return Identity{}, errors.New("token expired")
	}
	if c.NotBefore != nil && now.Add(tokenLeeway).Before(c.NotBefore.time()) {
		return Identity{}, errors.New("token not valid yet")
	}
	if c.Subject == "" {
		return Identity{}, errors.New("token names no subject")
	}
	id := Identity{User: c.Subject}
	if c.Kubernetes != nil && c.Kubernetes.Node != nil {
		id.Node = c.Kubernetes.Node.Name
	}
	return id, nil
}

// jwt is a parsed, not yet verified JSON Web Token (compact JWS).
type jwt struct {
	alg, kid  string
	signed    []byte // header.payload, what the signature covers
	signature []byte
	claims    Claims
}

func parseJWT(token string) (*jwt, error) {
	if len(token) > MaxTokenBytes {
		return nil, fmt.Errorf("token longer than %d bytes", MaxTokenBytes)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errors.New("token is not a JSON Web Token")
	}
	var header struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	if err := decodeSegment(parts[0], &header); err != nil {
		return nil, fmt.Errorf("token header: %w", err)
	}
	j := &jwt{alg: header.Alg, kid: header.Kid, signed: []byte(parts[0] + "." + parts[1])}
	if err := decodeSegment(parts[1], &j.claims); err != nil {
		return nil, fmt.Errorf("token claims: %w", err)
	}
	var err error
	if j.signature, err = base64.RawURLEncoding.Strict().DecodeString(parts[2]); err != nil {
		return nil, errors.New("token signature is not base64url")
	}
	if _, ok := algorithms[j.alg]; !ok {
		return nil, fmt.Errorf("token signed with %q: not an algorithm Kubernetes signs with", j.alg)
	}
	return j, nil
}

func decodeSegment(seg string, into any) error {
	b, err := base64.RawURLEncoding.Strict().DecodeString(seg)
	if err != nil {
		return errors.New("not base64url")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(into); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// algorithms are the JWS algorithms kube-apiserver signs service-account
// tokens with: RS256 for an RSA key, ES256/384/512 for an ECDSA key of the
// matching curve.
var algorithms = map[string]struct {
	hash  func() hash.Hash
	curve elliptic.Curve // nil: RSA
}{
	"RS256": {sha256.New, nil},
	"ES256": {sha256.New, elliptic.P256()},
	"ES384": {sha512.New384, elliptic.P384()},
	"ES512": {sha512.New, elliptic.P521()},
}

func (j *jwt) signedByOneOf(keys []JWK) bool {
	for _, k := range keys {
		if (j.kid == "" || k.ID == j.kid) && j.signedBy(k) {
			return true
		}
	}
	return false
}

func (j *jwt) signedBy(k JWK) bool {
	alg := algorithms[j.alg]
	h := alg.hash()
	h.Write(j.signed)
	digest := h.Sum(nil)
	switch pub := k.Public.(type) {
	case *rsa.PublicKey:
		if alg.curve != nil {
			return false
		}
		return rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest, j.signature) == nil
	case *ecdsa.PublicKey:
		if alg.curve == nil || pub.Curve != alg.curve {
			return false
		}
		size := (alg.curve.Params().BitSize + 7) / 8
		if len(j.signature) != 2*size {
			return false
		}
		r := new(big.Int).SetBytes(j.signature[:size])
		s := new(big.Int).SetBytes(j.signature[size:])
		return ecdsa.Verify(pub, digest, r, s)
	}
	return false
}
