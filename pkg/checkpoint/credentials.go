package checkpoint

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/google"
)

// Keychain is where the agent finds the credentials it pushes checkpoint
// images with, and the manager those it deletes them with.
var Keychain = NewKeychain(google.NewEnvAuthenticator)

// NewKeychain returns the registry keychain of ms2m's components: a Docker config
// ($DOCKER_CONFIG/config.json, the chart's agent.registryAuth) wins where
// it has credentials for the registry; otherwise, for Google's registries
// only (Artifact Registry *.pkg.dev, gcr.io), Google's Application Default
// Credentials, which on GKE with Workload Identity are short-lived tokens of
// the Google service account the component's Kubernetes ServiceAccount
// is bound to (annotation iam.gke.io/gcp-service-account), from the node's
// metadata server: no key to store or leak. Any other registry without a
// Docker config entry is pushed to anonymously, and never causes a call to
// the metadata server.
func NewKeychain(googleAuth func(context.Context) (authn.Authenticator, error)) authn.Keychain {
	return authn.NewMultiKeychain(authn.DefaultKeychain, &googleKeychain{newAuth: googleAuth})
}

// googleKeychain is go-containerregistry's google.Keychain without its two
// traps for a long-running process: that one resolves once per process and
// keeps anonymous for good when the first try fails (a metadata server not
// answering yet), and it ties later token refreshes to the first caller's
// context (one migration's push, cancelled when it ends). This one keeps
// only a success, and a failure fails the push with its cause instead of
// an anonymous 401 from the registry. It does not shell out to gcloud:
// ms2m's images have none.
type googleKeychain struct {
	newAuth func(context.Context) (authn.Authenticator, error)

	mu   sync.Mutex
	auth authn.Authenticator
}

func (k *googleKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	return k.ResolveContext(context.Background(), target)
}

func (k *googleKeychain) ResolveContext(ctx context.Context, target authn.Resource) (authn.Authenticator, error) {
	if !isGoogleRegistry(target.RegistryStr()) {
		return authn.Anonymous, nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.auth != nil {
		return k.auth, nil
	}
	// The token source outlives this push: it refreshes the token for
	// the next ones.
	auth, err := k.newAuth(context.WithoutCancel(ctx))
	if err != nil {
		return nil, fmt.Errorf("no credentials for %s: no Docker config entry for it (the chart's agent.registryAuth or manager.registryAuth) and no Google credentials "+
			"(on GKE: Workload Identity, the pod's ServiceAccount annotated iam.gke.io/gcp-service-account): %w", target.RegistryStr(), err)
	}
	k.auth = auth
	return auth, nil
}

// isGoogleRegistry is true for the hosts google.Keychain authenticates:
// Artifact Registry (REGION-docker.pkg.dev) and Container Registry.
func isGoogleRegistry(host string) bool {
	return host == "gcr.io" || strings.HasSuffix(host, ".gcr.io") || strings.HasSuffix(host, ".pkg.dev")
}
