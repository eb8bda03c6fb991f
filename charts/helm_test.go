// Package charts_test checks the ms2m Helm chart with the real helm CLI
// (installed from the Go module proxy by hack/go-tool.sh): lint, render,
// decode every object strictly into its Kubernetes type, and assert what a
// user relies on. The chart's flags are checked against the real binaries.
package charts_test

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/ms2m/ms2m/internal/testenv"
)

// release and namespace of the documented install (docs/install.md).
const (
	release   = "ms2m"
	namespace = "ms2m-system"
	// kubeVersion is what `helm template` assumes of the cluster.
	kubeVersion = "v1.33.0"
)

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..")
}

func chartDir() string { return filepath.Join(repoRoot(), "charts", "ms2m") }

// runHelm runs the pinned helm (testenv.Helm) with args and returns its
// stdout, or its stderr as the error.
func runHelm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return testenv.Helm(context.Background(), t.TempDir(), args...)
}

// values are extra helm flags: "-f", "file" or "--set", "k=v".
func render(t *testing.T, values ...string) objects {
	t.Helper()
	args := append([]string{"template", release, chartDir(), "--namespace", namespace, "--kube-version", kubeVersion}, values...)
	out, err := runHelm(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return decodeAll(t, out)
}

// objects is a rendered chart.
type objects []*unstructured.Unstructured

func decodeAll(t *testing.T, manifest string) objects {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
	var objs objects
	for {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("rendered chart is not YAML: %v", err)
		}
		if len(u.Object) == 0 {
			continue
		}
		objs = append(objs, u)
	}
	if len(objs) == 0 {
		t.Fatal("the chart rendered no object")
	}
	return objs
}

// get returns the one object of kind and name, failing the test otherwise.
func (o objects) get(t *testing.T, kind, name string) *unstructured.Unstructured {
	t.Helper()
	var found []*unstructured.Unstructured
	for _, u := range o {
		if u.GetKind() == kind && u.GetName() == name {
			found = append(found, u)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one %s %q, rendered %d (objects: %s)", kind, name, len(found), o)
	}
	return found[0]
}

func (o objects) ofKind(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, u := range o {
		if u.GetKind() == kind {
			out = append(out, u)
		}
	}
	return out
}

func (o objects) String() string {
	var names []string
	for _, u := range o {
		names = append(names, u.GetKind()+"/"+u.GetName())
	}
	return strings.Join(names, ", ")
}

func TestLint(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values []string
	}{
		{"defaults", nil},
		{"everything on", everythingOn()},
		{"webhook and extender off", []string{"--set", "webhook.enabled=false,schedulerExtender.enabled=false,agent.enabled=false"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"lint", "--strict", chartDir(), "--namespace", namespace, "--kube-version", kubeVersion}, tc.values...)
			if out, err := runHelm(t, args...); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

// The schema refuses a bad value before anything is rendered, naming it.
func TestSchemaRejectsBadValues(t *testing.T) {
	for _, tc := range []struct {
		name, set, want string
	}{
		{"misspelt key", "manager.replcas=3", "replcas"},
		{"no replicas", "manager.replicas=0", "/manager/replicas"},
		{"not a duration", "manager.defaultReplayCutoff=soon", "/manager/defaultReplayCutoff"},
		{"unknown pull policy", "image.pullPolicy=Sometimes", "/image/pullPolicy"},
		{"relative checkpoint dir", "agent.checkpointDir=var/lib/kubelet/checkpoints", "/agent/checkpointDir"},
		{"relative host path", "agent.hostPaths={etc/crio}", "/agent/hostPaths/0"},
		{"the whole host", "agent.hostPaths={/}", "/agent/hostPaths/0"},
		{"host path twice", "agent.hostPaths={/etc/crio,/etc/crio}", "/agent/hostPaths"},
		{"port out of range", "webhook.port=70000", "/webhook/port"},
		{"unknown issuer kind", "certificates.certManager.issuerRef.name=x,certificates.certManager.issuerRef.kind=Vault", "/certificates/certManager/issuerRef/kind"},
		{"string for a boolean", "metrics.enabled=maybe", "/metrics/enabled"},
		{"bad log level", "manager.log.level=loud", "/manager/log/level"},
		{"unknown eviction fallback", "manager.evictionFallback=ignore", "/manager/evictionFallback"},
		{"checkpoint repository on Docker Hub by default", "checkpointImageRepository=team/checkpoints", "/checkpointImageRepository"},
		{"dashboard label not a label key", "metrics.grafanaDashboard.label=grafana dashboard", "/metrics/grafanaDashboard/label"},
		{"dashboard namespace not a namespace name", "metrics.grafanaDashboard.namespace=Monitoring", "/metrics/grafanaDashboard/namespace"},
		{"misspelt dashboard key", "metrics.grafanaDashboard.folder=ms2m", "folder"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runHelm(t, "template", release, chartDir(), "--namespace", namespace, "--kube-version", kubeVersion, "--set", tc.set)
			if err == nil {
				t.Fatalf("--set %s was accepted", tc.set)
			}
			if !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("--set %s: the error does not name %q:\n%v", tc.set, tc.want, err)
			}
		})
	}
}
