package replay

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// staticKeys is a KeySource of fixed keys; refreshed counts Refresh calls.
type staticKeys struct {
	issuer    string
	keys      []JWK
	refreshed int
}

func (s *staticKeys) Keys(context.Context) (string, []JWK, error) { return s.issuer, s.keys, nil }
func (s *staticKeys) Refresh(context.Context) (string, []JWK, error) {
	s.refreshed++
	return s.issuer, s.keys, nil
}

// signJWT makes a compact JWS of claims as kube-apiserver does (RS256 for
// an RSA key, ES256 for a P-256 key).
func signJWT(t testing.TB, key crypto.Signer, kid string, claims map[string]any) string {
	t.Helper()
	alg := "RS256"
	if _, ok := key.(*ecdsa.PrivateKey); ok {
		alg = "ES256"
	}
	seg := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signed := seg(map[string]string{"alg": alg, "kid": kid}) + "." + seg(claims)
	digest := sha256.Sum256([]byte(signed))
	var sig []byte
	switch k := key.(type) {
	case *rsa.PrivateKey:
		var err error
		if sig, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, digest[:]); err != nil {
			t.Fatal(err)
		}
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, digest[:])
		if err != nil {
			t.Fatal(err)
		}
		sig = append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestTokenVerifier(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	strangerKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	const issuer, manager = "https://kubernetes.default.svc", "system:serviceaccount:ms2m-system:ms2m-manager"
	aud := ControlAudience("shop", "1234")
	now := time.Unix(1_800_000_000, 0)
	claims := func(edit func(map[string]any)) map[string]any {
		c := map[string]any{"iss": issuer, "sub": manager, "aud": []string{aud}, "exp": now.Add(10 * time.Minute).Unix(), "nbf": now.Add(-time.Second).Unix(), "iat": now.Unix()}
		if edit != nil {
			edit(c)
		}
		return c
	}
	keys := &staticKeys{issuer: issuer, keys: []JWK{{ID: "rsa", Public: &rsaKey.PublicKey}, {ID: "ec", Public: &ecKey.PublicKey}}}
	v := &TokenVerifier{Audience: aud, Keys: keys, Now: func() time.Time { return now }}
	alg := func(a string) string {
		return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"` + a + `","kid":"rsa"}`))
	}
	good := signJWT(t, rsaKey, "rsa", claims(nil))
	for _, tc := range []struct {
		name, token, err string
	}{
		{"RS256", good, ""},
		{"ES256", signJWT(t, ecKey, "ec", claims(nil)), ""},
		{"audience as one string", signJWT(t, rsaKey, "rsa", claims(func(c map[string]any) { c["aud"] = aud })), ""},
		{"within the clock skew after expiry", signJWT(t, rsaKey, "rsa", claims(func(c map[string]any) { c["exp"] = now.Add(-10 * time.Second).Unix() })), ""},
		{"another pod's audience", signJWT(t, rsaKey, "rsa", claims(func(c map[string]any) { c["aud"] = []string{ControlAudience("shop", "5678")} })), "not for this sidecar"},
		{"the API server's audience", signJWT(t, rsaKey, "rsa", claims(func(c map[string]any) { c["aud"] = []string{issuer} })), "not for this sidecar"},
		{"another issuer", signJWT(t, rsaKey, "rsa", claims(func(c map[string]any) { c["iss"] = "https://elsewhere" })), "not by the cluster's issuer"},
		{"expired", signJWT(t, rsaKey, "rsa", claims(func(c map[string]any) { c["exp"] = now.Add(-time.Minute).Unix() })), "expired"},
		{"no expiry", signJWT(t, rsaKey, "rsa", claims(func(c map[string]any) { delete(c, "exp") })), "no expiry"},
		{"not yet valid", signJWT(t, rsaKey, "rsa", claims(func(c map[string]any) { c["nbf"] = now.Add(time.Minute).Unix() })), "not valid yet"},
		{"no subject", signJWT(t, rsaKey, "rsa", claims(func(c map[string]any) { delete(c, "sub") })), "no subject"},
		{"a key the cluster does not have", signJWT(t, strangerKey, "ec", claims(nil)), "not signed by the cluster"},
		{"another key's id", signJWT(t, ecKey, "rsa", claims(nil)), "not signed by the cluster"},
		{"alg none", alg("none") + "." + strings.Split(good, ".")[1] + ".", "not an algorithm"},
		{"alg HS256 (the public key as a MAC secret)", alg("HS256") + "." + strings.Split(good, ".")[1] + "." + strings.Split(good, ".")[2], "not an algorithm"},
		{"claims changed after signing", strings.Split(good, ".")[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"`+issuer+`","sub":"system:admin","aud":"`+aud+`","exp":1900000000}`)) + "." + strings.Split(good, ".")[2], "not signed by the cluster"},
		{"two segments", "a.b", "not a JSON Web Token"},
		{"padded base64", strings.Split(good, ".")[0] + "=." + strings.Split(good, ".")[1] + "." + strings.Split(good, ".")[2], "not base64url"},
		{"too long", strings.Repeat("a", MaxTokenBytes+1), "longer than"},
	} {
		id, err := v.Authenticate(context.Background(), tc.token)
		user := id.User
		switch {
		case tc.err == "" && (err != nil || user != manager):
			t.Errorf("%s: %q, %v; want %s", tc.name, user, err, manager)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: %q, %v; want an error containing %q", tc.name, user, err, tc.err)
		}
	}
	if keys.refreshed == 0 {
		t.Error("a token of an unknown key did not make the verifier read the keys again (a rotated key would never be accepted)")
	}
	if _, err := (&TokenVerifier{Keys: keys}).Authenticate(context.Background(), good); err == nil {
		t.Error("a verifier without an audience accepted a token")
	}
}

func TestIssuerKeysParse(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	rsaJWK := func(kid string, k *rsa.PublicKey) string {
		return `{"use":"sig","kty":"RSA","kid":"` + kid + `","alg":"RS256","n":"` + b64(k.N.Bytes()) + `","e":"AQAB"}`
	}
	set := `{"keys":[` + rsaJWK("a", &rsaKey.PublicKey) + `,` + rsaJWK("weak", &small.PublicKey) +
		`,{"use":"sig","kty":"EC","kid":"b","crv":"P-384","x":"` + b64(ecKey.X.FillBytes(make([]byte, 48))) + `","y":"` + b64(ecKey.Y.FillBytes(make([]byte, 48))) + `"}` +
		`,{"use":"sig","kty":"EC","kid":"off-curve","crv":"P-256","x":"` + b64(make([]byte, 32)) + `","y":"` + b64(make([]byte, 32)) + `"}` +
		`,{"use":"enc","kty":"RSA","kid":"encryption","n":"AQAB","e":"AQAB"}]}`
	var s jwkSet
	if err := json.Unmarshal([]byte(set), &s); err != nil {
		t.Fatal(err)
	}
	keys, err := s.parse()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range keys {
		ids = append(ids, k.ID)
	}
	if strings.Join(ids, ",") != "a,b" {
		t.Errorf("keys kept: %v; want a and b (a 1024-bit RSA key and a point off its curve refused, an encryption key passed over)", ids)
	}
	if _, err := (jwkSet{}).parse(); err == nil || !strings.Contains(err.Error(), "no signing key") {
		t.Errorf("an empty set: %v; want no signing key", err)
	}
}

func FuzzParseJWT(f *testing.F) {
	f.Add("eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.c2ln")
	f.Add("a.b.c")
	f.Add("..")
	f.Fuzz(func(t *testing.T, token string) {
		j, err := parseJWT(token)
		if err != nil {
			return
		}
		if _, ok := algorithms[j.alg]; !ok {
			t.Fatalf("accepted algorithm %q", j.alg)
		}
		// Whatever parses is still refused without a key that signed it.
		if j.signedByOneOf(nil) {
			t.Fatal("signed by no key")
		}
		_, _ = j.claims.check("i", "a", time.Now())
	})
}

// The issuer's keys are read once, again only when due (a token naming an
// unknown key, at most every MinRefresh), and an API server that is away
// leaves the keys read last in use without a read on every control call.
func TestIssuerKeysAreReadWhenDue(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	set := `{"keys":[{"use":"sig","kty":"EC","kid":"k","crv":"P-256","x":"` + b64(key.X.FillBytes(make([]byte, 32))) + `","y":"` + b64(key.Y.FillBytes(make([]byte, 32))) + `"}]}`
	var reads, down atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/.well-known/openid-configuration" { // a read starts there
			reads.Add(1)
		}
		if down.Load() == 1 {
			http.Error(w, "away", http.StatusServiceUnavailable)
			return
		}
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			_, _ = io.WriteString(w, `{"issuer":"https://kubernetes.default.svc"}`)
		case "/openid/v1/jwks":
			_, _ = io.WriteString(w, set)
		}
	}))
	defer srv.Close()
	k := &IssuerKeys{HTTP: srv.Client(), Server: srv.URL, MinRefresh: time.Minute}
	ctx := context.Background()
	expectReads := func(what string, want int32, get func(context.Context) (string, []JWK, error)) {
		t.Helper()
		issuer, keys, err := get(ctx)
		if err != nil || issuer != "https://kubernetes.default.svc" || len(keys) != 1 || keys[0].ID != "k" {
			t.Fatalf("%s: %q %v %v", what, issuer, keys, err)
		}
		if n := reads.Load(); n != want {
			t.Fatalf("%s: %d reads of the keys, want %d", what, n, want)
		}
	}
	expectReads("first use", 1, k.Keys)
	expectReads("again", 1, k.Keys)
	expectReads("an unknown key within MinRefresh", 1, k.Refresh)
	k.fetched, k.tried = k.fetched.Add(-2*time.Minute), k.tried.Add(-2*time.Minute)
	expectReads("an unknown key after MinRefresh", 2, k.Refresh)
	down.Store(1)
	k.fetched, k.tried = k.fetched.Add(-2*time.Hour), k.tried.Add(-2*time.Minute)
	expectReads("the API server away: the keys read last", 3, k.Keys)
	expectReads("still away: not asked again before MinRefresh", 3, k.Keys)
}
