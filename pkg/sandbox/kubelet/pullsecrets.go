package kubelet

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// pullKeychain is what a kubelet pulls a pod's images with: the
// credentials of the pod's imagePullSecrets (kubernetes.io/dockerconfigjson
// or kubernetes.io/dockercfg), by registry host, and none for any other
// registry: the sandbox's nodes have no credentials of their own. A secret
// that is missing or unreadable is skipped, as the kubelet does (it logs
// it; the pull then fails if the registry wants credentials).
type pullKeychain map[string]authn.AuthConfig

func (k pullKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if c, ok := k[r.RegistryStr()]; ok {
		return authn.FromConfig(c), nil
	}
	return authn.Anonymous, nil
}

// nodeCredentials is what a runtime pulls with on its own (containerd's
// pull of a checkpoint's base image): nothing.
var nodeCredentials = pullKeychain{}

func (f *Fleet) podKeychain(ctx context.Context, pod *corev1.Pod) pullKeychain {
	k := pullKeychain{}
	for _, ref := range pod.Spec.ImagePullSecrets {
		s, err := f.opts.Client.CoreV1().Secrets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			f.log.Info("image pull secret not read; pulling without it", "pod", pod.Namespace+"/"+pod.Name, "secret", ref.Name, "error", err.Error())
			continue
		}
		if err := k.add(s); err != nil {
			f.log.Info("image pull secret not understood; pulling without it", "pod", pod.Namespace+"/"+pod.Name, "secret", ref.Name, "error", err.Error())
		}
	}
	return k
}

// dockerAuth is one registry's entry of a Docker config.
type dockerAuth struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Auth     string `json:"auth"`
}

func (k pullKeychain) add(s *corev1.Secret) error {
	var entries map[string]dockerAuth
	switch s.Type {
	case corev1.SecretTypeDockerConfigJson:
		var cfg struct {
			Auths map[string]dockerAuth `json:"auths"`
		}
		if err := json.Unmarshal(s.Data[corev1.DockerConfigJsonKey], &cfg); err != nil {
			return err
		}
		entries = cfg.Auths
	case corev1.SecretTypeDockercfg:
		if err := json.Unmarshal(s.Data[corev1.DockerConfigKey], &entries); err != nil {
			return err
		}
	default:
		return fmt.Errorf("type %s, not %s", s.Type, corev1.SecretTypeDockerConfigJson)
	}
	for key, e := range entries {
		// "https://registry:5000/v1/" and "registry:5000" name one host.
		host := strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://")
		host, _, _ = strings.Cut(host, "/")
		c := authn.AuthConfig{Username: e.Username, Password: e.Password}
		if e.Auth != "" && c.Username == "" {
			b, err := base64.StdEncoding.DecodeString(e.Auth)
			if err != nil {
				return fmt.Errorf("%s: auth: %w", key, err)
			}
			c.Username, c.Password, _ = strings.Cut(string(b), ":")
		}
		if _, ok := k[host]; !ok { // the first secret naming a registry wins
			k[host] = c
		}
	}
	return nil
}

// pull fetches image's manifest from the sandbox registry with keys, as a
// runtime's pull does before it stores an image; images elsewhere are
// not pulled (the sandbox runs the project's binaries for them).
func (rt *Runtime) pull(ctx context.Context, image string, keys authn.Keychain) error {
	ref, ok := rt.fromRegistry(image)
	if !ok {
		return nil
	}
	if _, err := remote.Head(ref, remote.WithContext(ctx), remote.WithAuthFromKeychain(keys)); err != nil {
		return fmt.Errorf("failed to pull image %q: %w", image, err)
	}
	return nil
}
