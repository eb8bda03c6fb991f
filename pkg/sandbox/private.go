package sandbox

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrv1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ms2m/ms2m/pkg/sandbox/kubelet"
)

// The sandbox registry's private repositories: every repository under
// privateRepositories answers only to the sandbox's registry credentials
// (HTTP basic authentication; 401 with a challenge otherwise, as a private
// registry answers an anonymous pull). The rest of the registry (the
// checkpoint images) is open, as before. The sandbox puts the example
// app's image there (PrivateAppImage), so that a pod can run from a
// private image only with an imagePullSecret (PullSecret).
const privateRepositories = "private/"

// registryUser is the sandbox registry's one user.
const registryUser = "sandbox"

// privateRepos guards the private repositories.
type privateRepos struct {
	next     http.Handler
	password string
}

func (p privateRepos) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/v2/"+privateRepositories) {
		u, pw, ok := r.BasicAuth()
		if !ok || u != registryUser || subtle.ConstantTimeCompare([]byte(pw), []byte(p.password)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="ms2m sandbox registry"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`))
			return
		}
	}
	p.next.ServeHTTP(w, r)
}

// registryPassword is the registry's password, made once per sandbox
// directory and kept there (mode 0600), so that it outlives a restart as
// the pushed images do.
func registryPassword(dir string) (string, error) {
	path := filepath.Join(dir, "registry-password")
	b, err := os.ReadFile(path)
	if err == nil && len(b) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	pw := hex.EncodeToString(raw)
	return pw, os.WriteFile(path, []byte(pw+"\n"), 0o600)
}

// PrivateAppImage is the example app's image in the registry's private
// repositories: the project's app binary, as SecondProjectImage, pulled
// only with the registry's credentials.
func (s *Sandbox) PrivateAppImage() string { return s.privateAppRepository() + ":v0.1.0" }

func (s *Sandbox) privateAppRepository() string {
	return s.Registry + "/" + privateRepositories + "ms2m-app"
}

// PullSecret is an image pull secret (kubernetes.io/dockerconfigjson) for
// the sandbox registry, named name in namespace.
func (s *Sandbox) PullSecret(namespace, secretName string) (*corev1.Secret, error) {
	auth := map[string]map[string]map[string]string{"auths": {s.Registry: {"username": registryUser, "password": s.registryPassword}}}
	b, err := json.Marshal(auth)
	if err != nil {
		return nil, err
	}
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secretName, Namespace: namespace}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: b}}, nil
}

// pushPrivateImages puts the private project images into the registry:
// an image with no layers whose config names the project image's user
// (the sandbox runs the project's binary for it).
func (s *Sandbox) pushPrivateImages() error {
	ref, err := name.ParseReference(s.PrivateAppImage(), name.Insecure)
	if err != nil {
		return err
	}
	img, err := mutate.ConfigFile(empty.Image, &ggcrv1.ConfigFile{OS: "linux", Architecture: runtime.GOARCH,
		Config: ggcrv1.Config{User: kubelet.ProjectImageUser}})
	if err != nil {
		return err
	}
	if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: registryUser, Password: s.registryPassword})); err != nil {
		return fmt.Errorf("sandbox: pushing %s: %w", ref, err)
	}
	return nil
}

// projectImages are the repositories whose images run the project's
// binaries: the project's two and the private copy of the app's.
func projectImages(s *Sandbox) []string {
	return []string{kubelet.ProjectImage, kubelet.SecondProjectImage, s.privateAppRepository()}
}
