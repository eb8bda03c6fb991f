package clientconfig

import (
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/rest"
)

func TestTokenSourceRereadsARotatedTokenFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("first\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	token := TokenSource(&rest.Config{BearerToken: "stale", BearerTokenFile: file})
	expectToken(t, token, "first")
	if err := os.WriteFile(file, []byte("rotated\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	expectToken(t, token, "rotated")
}

func TestTokenSource(t *testing.T) {
	expectToken(t, TokenSource(&rest.Config{BearerToken: "inline"}), "inline")
	if _, err := TokenSource(&rest.Config{})(); err == nil {
		t.Error("a configuration without a token (client certificate) gave no error")
	}
	if _, err := TokenSource(&rest.Config{BearerTokenFile: filepath.Join(t.TempDir(), "missing")})(); err == nil {
		t.Error("a missing token file gave no error")
	}
}

func expectToken(t *testing.T, token func() (string, error), want string) {
	t.Helper()
	got, err := token()
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("token = %q, want %q", got, want)
	}
}
