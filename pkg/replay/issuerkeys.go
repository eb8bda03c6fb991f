package replay

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
)

// JWK is one public key of the service-account issuer.
type JWK struct {
	ID     string
	Public crypto.PublicKey // *rsa.PublicKey or *ecdsa.PublicKey
}

// IssuerKeys reads the service-account issuer and its public keys from the
// API server's OIDC discovery endpoints (/.well-known/openid-configuration
// and /openid/v1/jwks), which Kubernetes lets every service account read
// (the system:service-account-issuer-discovery ClusterRole is bound to
// system:serviceaccounts by default). The keys are cached: read once, again
// when a token names a key they lack (at most every MinRefresh), and again
// after MaxAge.
type IssuerKeys struct {
	HTTP *http.Client
	// Server is the API server's URL.
	Server string
	// MinRefresh (default 10 s) spaces reads forced by unknown keys, so
	// forged tokens cannot make the sidecar flood the API server.
	MinRefresh time.Duration
	// MaxAge (default 1 h) is how long read keys are used.
	MaxAge time.Duration

	mu      sync.Mutex
	issuer  string
	keys    []JWK
	fetched time.Time
	// tried is the last read, successful or not: a failed read is not
	// repeated before MinRefresh, so an API server that is away does not
	// slow every control call.
	tried time.Time
}

// fetchTimeout bounds one read of the issuer's keys.
const fetchTimeout = 5 * time.Second

// NewIssuerKeys reads the keys from cfg's API server with cfg's
// credentials (the sidecar's own service-account token).
func NewIssuerKeys(cfg *rest.Config) (*IssuerKeys, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	u, _, err := rest.DefaultServerUrlFor(cfg)
	if err != nil {
		return nil, err
	}
	return &IssuerKeys{HTTP: hc, Server: u.String()}, nil
}

// Keys implements KeySource.
func (k *IssuerKeys) Keys(ctx context.Context) (string, []JWK, error) {
	return k.get(ctx, false)
}

// Refresh implements KeySource.
func (k *IssuerKeys) Refresh(ctx context.Context) (string, []JWK, error) {
	return k.get(ctx, true)
}

func (k *IssuerKeys) get(ctx context.Context, refresh bool) (string, []JWK, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	minRefresh, maxAge := cmpDefault(k.MinRefresh, 10*time.Second), cmpDefault(k.MaxAge, time.Hour)
	age := time.Since(k.fetched)
	fresh := k.keys != nil && age < maxAge && (!refresh || age < minRefresh)
	if fresh || k.keys != nil && time.Since(k.tried) < minRefresh {
		return k.issuer, k.keys, nil
	}
	k.tried = time.Now()
	fctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	issuer, keys, err := k.fetch(fctx)
	if err != nil {
		if k.keys != nil {
			return k.issuer, k.keys, nil // the API server is away: the keys read last still hold
		}
		return "", nil, err
	}
	k.issuer, k.keys, k.fetched = issuer, keys, time.Now()
	return issuer, keys, nil
}

func cmpDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func (k *IssuerKeys) fetch(ctx context.Context) (string, []JWK, error) {
	var discovery struct {
		Issuer string `json:"issuer"`
	}
	if err := k.getJSON(ctx, "/.well-known/openid-configuration", &discovery); err != nil {
		return "", nil, err
	}
	if discovery.Issuer == "" {
		return "", nil, errors.New("the API server's OIDC discovery names no issuer (is --service-account-issuer an https URL?)")
	}
	var set jwkSet
	if err := k.getJSON(ctx, "/openid/v1/jwks", &set); err != nil {
		return "", nil, err
	}
	keys, err := set.parse()
	if err != nil {
		return "", nil, fmt.Errorf("/openid/v1/jwks: %w", err)
	}
	return discovery.Issuer, keys, nil
}

// maxDiscoveryBytes bounds the API server's discovery answers.
const maxDiscoveryBytes = 1 << 20

func (k *IssuerKeys) getJSON(ctx context.Context, path string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(k.Server, "/")+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	resp, err := k.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("GET %s: API server answered %s: %s", path, resp.Status, strings.TrimSpace(string(msg)))
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxDiscoveryBytes)).Decode(into); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

// jwkSet is a JSON Web Key Set (RFC 7517) as kube-apiserver serves it.
type jwkSet struct {
	Keys []struct {
		Kty string `json:"kty"`
		Kid string `json:"kid"`
		Use string `json:"use"`
		N   string `json:"n"`
		E   string `json:"e"`
		Crv string `json:"crv"`
		X   string `json:"x"`
		Y   string `json:"y"`
	} `json:"keys"`
}

var curves = map[string]elliptic.Curve{"P-256": elliptic.P256(), "P-384": elliptic.P384(), "P-521": elliptic.P521()}

// parse keeps the signing keys it understands; a set with none is an
// error.
func (s jwkSet) parse() ([]JWK, error) {
	var keys []JWK
	var errs []error
	for i, k := range s.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		pub, err := parseJWK(k.Kty, k.N, k.E, k.Crv, k.X, k.Y)
		if err != nil {
			errs = append(errs, fmt.Errorf("keys[%d] (kid %q): %w", i, k.Kid, err))
			continue
		}
		keys = append(keys, JWK{ID: k.Kid, Public: pub})
	}
	if len(keys) == 0 {
		return nil, errors.Join(append([]error{errors.New("no signing key")}, errs...)...)
	}
	return keys, nil
}

func parseJWK(kty, n, e, crv, x, y string) (crypto.PublicKey, error) {
	b64 := base64.RawURLEncoding
	switch kty {
	case "RSA":
		nb, err1 := b64.DecodeString(n)
		eb, err2 := b64.DecodeString(e)
		if err1 != nil || err2 != nil || len(nb) == 0 || len(eb) == 0 || len(eb) > 4 {
			return nil, errors.New("RSA key: bad n or e")
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: int(new(big.Int).SetBytes(eb).Int64())}
		if pub.N.BitLen() < 2048 || pub.E < 3 || pub.E%2 == 0 {
			return nil, fmt.Errorf("RSA key of %d bits with exponent %d: refused", pub.N.BitLen(), pub.E)
		}
		return pub, nil
	case "EC":
		curve, ok := curves[crv]
		if !ok {
			return nil, fmt.Errorf("EC key on curve %q: not supported", crv)
		}
		xb, err1 := b64.DecodeString(x)
		yb, err2 := b64.DecodeString(y)
		size := (curve.Params().BitSize + 7) / 8
		if err1 != nil || err2 != nil || len(xb) != size || len(yb) != size {
			return nil, errors.New("EC key: bad x or y")
		}
		point := append(append([]byte{4}, xb...), yb...)
		return ecdsa.ParseUncompressedPublicKey(curve, point)
	}
	return nil, fmt.Errorf("key type %q: not supported", kty)
}
