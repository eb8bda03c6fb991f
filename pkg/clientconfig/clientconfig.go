// Package clientconfig holds what every ms2m binary needs to talk to the
// API server and the kubelet: the scheme its clients decode with and the
// bearer token it presents. It sits below pkg/manager so that a binary
// that is not the control plane (the node agent DaemonSet, the kubectl
// plugin) does not link the controllers, webhooks, scheduler extender and
// Kafka client just to build a client. Keep it a leaf: it must import
// nothing of ms2m but the API types.
package clientconfig

import (
	"errors"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	migrationv1alpha1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// Scheme knows the core types and the ms2m API.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := migrationv1alpha1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}

// TokenSource returns the bearer token of cfg, re-reading a token file on
// every call so a rotated service-account token is picked up. The
// controller presents it to the replay sidecars, the agent to its kubelet.
func TokenSource(cfg *rest.Config) func() (string, error) {
	return func() (string, error) {
		if cfg.BearerTokenFile != "" {
			b, err := os.ReadFile(cfg.BearerTokenFile)
			if err != nil {
				return "", err
			}
			return strings.TrimSpace(string(b)), nil
		}
		if cfg.BearerToken == "" {
			return "", errors.New("no service-account token in the client configuration (running with a client certificate?)")
		}
		return cfg.BearerToken, nil
	}
}
