package sandbox

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// ConfigureScheduler restarts the kube-scheduler with extenders (items of
// a KubeSchedulerConfiguration's extenders list) in place of the ones it
// had, as an operator reconfigures a cluster's scheduler; see ExtendersFrom.
func (s *Sandbox) ConfigureScheduler(ctx context.Context, extenders []map[string]any) error {
	s.opts.SchedulerExtenders = extenders
	s.cp.stopProcess("kube-scheduler")
	return s.cp.startScheduler(ctx, s.opts)
}

// ExtendersFrom reads the extenders of a KubeSchedulerConfiguration (such
// as the chart's <release>-kube-scheduler-config) for this sandbox's
// kube-scheduler. A Service name in an extender's URL
// (name.namespace.svc[.cluster.local]) becomes the Service's ClusterIP —
// the sandbox's SIMULATED cluster DNS — with the name kept as the TLS
// server name, so the certificate is still checked against it; caPEM is
// trusted in place of the configuration's caFile, a path on a real
// cluster's control-plane nodes.
func (s *Sandbox) ExtendersFrom(ctx context.Context, config, caPEM []byte) ([]map[string]any, error) {
	var cfg struct {
		Extenders []map[string]any `json:"extenders"`
	}
	if err := yaml.Unmarshal(config, &cfg); err != nil {
		return nil, fmt.Errorf("KubeSchedulerConfiguration: %w", err)
	}
	for _, ext := range cfg.Extenders {
		prefix, _ := ext["urlPrefix"].(string)
		u, err := url.Parse(prefix)
		if err != nil {
			return nil, fmt.Errorf("extender urlPrefix %q: %w", prefix, err)
		}
		host := u.Hostname()
		name, ns, ok := serviceName(host)
		if !ok {
			continue
		}
		svc, err := s.Client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("extender %s: %w", prefix, err)
		}
		u.Host = net.JoinHostPort(svc.Spec.ClusterIP, u.Port())
		ext["urlPrefix"] = u.String()
		tlsConfig, _ := ext["tlsConfig"].(map[string]any)
		if tlsConfig == nil {
			tlsConfig = map[string]any{}
		}
		tlsConfig["serverName"] = host
		if len(caPEM) > 0 {
			delete(tlsConfig, "caFile")
			tlsConfig["caData"] = base64.StdEncoding.EncodeToString(caPEM)
		}
		ext["tlsConfig"] = tlsConfig
	}
	return cfg.Extenders, nil
}

// serviceName splits a cluster DNS name of a Service.
func serviceName(host string) (name, namespace string, ok bool) {
	host = strings.TrimSuffix(strings.TrimSuffix(host, "."), ".cluster.local")
	rest, ok := strings.CutSuffix(host, ".svc")
	if !ok {
		return "", "", false
	}
	name, namespace, ok = strings.Cut(rest, ".")
	return name, namespace, ok && !strings.Contains(namespace, ".")
}
