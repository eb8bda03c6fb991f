package checkpoint

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

const arHost = "europe-west1-docker.pkg.dev"

// fakeGoogle stands for Google's Application Default Credentials (on GKE,
// the metadata server answering for the agent's Workload Identity).
type fakeGoogle struct {
	calls int
	fail  int // fail the first fail calls
}

func (g *fakeGoogle) auth(ctx context.Context) (authn.Authenticator, error) {
	g.calls++
	if g.calls <= g.fail {
		return nil, errors.New("metadata server not ready")
	}
	return tokenSource{ctx}, nil
}

// tokenSource, like oauth2's, refreshes its token with the context it was
// made with.
type tokenSource struct{ ctx context.Context }

func (s tokenSource) Authorization() (*authn.AuthConfig, error) {
	if err := s.ctx.Err(); err != nil {
		return nil, err
	}
	return &authn.AuthConfig{RegistryToken: "workload-identity-token"}, nil
}

// dockerConfig points DOCKER_CONFIG at a config.json with credentials for
// hosts (none: no file at all, as without agent.registryAuth).
func dockerConfig(t *testing.T, hosts ...string) {
	t.Helper()
	dir := t.TempDir()
	if len(hosts) > 0 {
		auths := map[string]string{}
		var entries []string
		for _, h := range hosts {
			auths[h] = base64.StdEncoding.EncodeToString([]byte("_json_key:secret-of-" + h))
			entries = append(entries, `"`+h+`":{"auth":"`+auths[h]+`"}`)
		}
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"auths":{`+strings.Join(entries, ",")+`}}`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("DOCKER_CONFIG", dir)
}

func credentialsFor(t *testing.T, kc authn.Keychain, repo string) (*authn.AuthConfig, error) {
	t.Helper()
	r, err := name.NewRepository(repo)
	if err != nil {
		t.Fatal(err)
	}
	a, err := authn.Resolve(t.Context(), kc, r)
	if err != nil {
		return nil, err
	}
	return authn.Authorization(t.Context(), a)
}

// The agent pushes with a Docker config's credentials where it has them
// for the registry (any cluster, agent.registryAuth); without one it
// pushes to Artifact Registry and Container Registry with the Google
// identity of its pod (Workload Identity on GKE, no key), and asks the
// metadata server for nothing when the registry is not Google's.
func TestRegistryCredentials(t *testing.T) {
	for _, tc := range []struct {
		name        string
		dockerHosts []string
		repo        string
		want        authn.AuthConfig
		askGoogle   bool
	}{
		{"Artifact Registry, no Docker config: Workload Identity", nil, arHost + "/proj/ckpt/images",
			authn.AuthConfig{RegistryToken: "workload-identity-token"}, true},
		{"Container Registry, no Docker config: Workload Identity", nil, "eu.gcr.io/proj/ckpt",
			authn.AuthConfig{RegistryToken: "workload-identity-token"}, true},
		{"Artifact Registry with a Docker config for it: the Docker config", []string{arHost}, arHost + "/proj/ckpt/images",
			authn.AuthConfig{Username: "_json_key", Password: "secret-of-" + arHost}, false},
		{"Artifact Registry, a Docker config for another registry: Workload Identity", []string{"registry.example.com"}, arHost + "/proj/ckpt/images",
			authn.AuthConfig{RegistryToken: "workload-identity-token"}, true},
		{"another registry with a Docker config: the Docker config", []string{"registry.example.com"}, "registry.example.com/ms2m/ckpt",
			authn.AuthConfig{Username: "_json_key", Password: "secret-of-registry.example.com"}, false},
		{"another registry, no Docker config: anonymous, no metadata server", nil, "registry.example.com/ms2m/ckpt",
			authn.AuthConfig{}, false},
		{"a host merely containing pkg.dev: anonymous", nil, "pkg.dev.example.com/ms2m/ckpt",
			authn.AuthConfig{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dockerConfig(t, tc.dockerHosts...)
			g := &fakeGoogle{}
			got, err := credentialsFor(t, NewKeychain(g.auth), tc.repo)
			if err != nil {
				t.Fatal(err)
			}
			if *got != tc.want {
				t.Errorf("credentials %+v, want %+v", *got, tc.want)
			}
			if asked := g.calls > 0; asked != tc.askGoogle {
				t.Errorf("Google credentials asked for: %v, want %v", asked, tc.askGoogle)
			}
		})
	}
}

// A metadata server that does not answer yet (a pod just scheduled)
// fails that push with the reason, and the next push tries again: the
// agent is not left anonymous until it restarts. A push's context ending
// does not end the credentials the next pushes use.
func TestGoogleCredentialsRecoverAfterAFailure(t *testing.T) {
	dockerConfig(t)
	g := &fakeGoogle{fail: 1}
	kc := NewKeychain(g.auth)
	repo := arHost + "/proj/ckpt/images"
	_, err := credentialsFor(t, kc, repo)
	if err == nil || !strings.Contains(err.Error(), "metadata server not ready") || !strings.Contains(err.Error(), "iam.gke.io/gcp-service-account") {
		t.Fatalf("first push: %v, want the metadata server's error and what to configure", err)
	}
	r, _ := name.NewRepository(repo)
	ctx, cancel := context.WithCancel(t.Context())
	a, err := authn.Resolve(ctx, kc, r)
	cancel()
	if err != nil {
		t.Fatalf("second push: %v", err)
	}
	if got, err := a.Authorization(); err != nil || got.RegistryToken != "workload-identity-token" {
		t.Fatalf("second push: %+v, %v", got, err)
	}
	if _, err := credentialsFor(t, kc, repo); err != nil || g.calls != 2 {
		t.Errorf("third push: %v; Google credentials made %d times, want 2 (kept after the first success)", err, g.calls)
	}
}
