package kubelet

import (
	"encoding/base64"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
)

// The kubelet reads a pod's pull secrets as Docker configs, in both
// formats, with the password given or folded into "auth", and keyed by the
// registry host however the key is spelled; other registries get no
// credentials.
func TestPullSecretsGiveCredentialsForTheirRegistryOnly(t *testing.T) {
	folded := base64.StdEncoding.EncodeToString([]byte("bob:s3cret"))
	k := pullKeychain{}
	for _, s := range []*corev1.Secret{
		{Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"127.0.0.1:5000":{"username":"alice","password":"pw"}}}`)}},
		{Type: corev1.SecretTypeDockercfg, Data: map[string][]byte{corev1.DockerConfigKey: []byte(`{"https://registry.example.com/v1/":{"auth":"` + folded + `"}}`)}},
	} {
		if err := k.add(s); err != nil {
			t.Fatal(err)
		}
	}
	for image, want := range map[string]authn.AuthConfig{
		"127.0.0.1:5000/private/app:v1":   {Username: "alice", Password: "pw"},
		"registry.example.com/team/app:1": {Username: "bob", Password: "s3cret"},
		"ghcr.io/ms2m/ms2m:v0.1.0":        {},
	} {
		ref, err := name.ParseReference(image)
		if err != nil {
			t.Fatal(err)
		}
		a, err := k.Resolve(ref.Context())
		if err != nil {
			t.Fatal(err)
		}
		got, err := a.Authorization()
		if err != nil {
			t.Fatal(err)
		}
		if got.Username != want.Username || got.Password != want.Password {
			t.Errorf("%s: credentials %s:%s, want %s:%s", image, got.Username, got.Password, want.Username, want.Password)
		}
	}
	if err := k.add(&corev1.Secret{Type: corev1.SecretTypeOpaque}); err == nil {
		t.Error("an Opaque secret was taken as a pull secret")
	}
}
