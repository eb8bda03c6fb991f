package charts_test

import (
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
)

// Kinds the chart may render that client-go's scheme does not know.
var crdKinds = map[string]bool{
	"cert-manager.io/v1, Kind=Certificate":          true,
	"cert-manager.io/v1, Kind=Issuer":               true,
	"monitoring.coreos.com/v1, Kind=ServiceMonitor": true,
	"monitoring.coreos.com/v1, Kind=PodMonitor":     true,
	"monitoring.coreos.com/v1, Kind=PrometheusRule": true,
}

// as decodes u into a typed object, refusing unknown fields: a misspelt
// field in a template fails here instead of being dropped by the API server.
func as[T runtime.Object](t *testing.T, u *unstructured.Unstructured, obj T) T {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, obj, true); err != nil {
		t.Fatalf("%s %s does not decode strictly: %v", u.GetKind(), u.GetName(), err)
	}
	return obj
}

func everythingOn() []string {
	return []string{"-f", filepath.Join(repoRoot(), "charts", "testdata", "everything-on.yaml")}
}

func objs(t *testing.T) objects { return render(t, everythingOn()...) }

func TestEveryRenderedObjectIsValid(t *testing.T) {
	for name, values := range map[string][]string{
		"defaults":      nil,
		"everything on": everythingOn(),
	} {
		t.Run(name, func(t *testing.T) {
			for _, u := range render(t, values...) {
				gvk := u.GroupVersionKind()
				if crdKinds[gvk.String()] {
					continue
				}
				obj, err := scheme.Scheme.New(gvk)
				if err != nil {
					t.Errorf("%s %s: unknown kind: %v", gvk, u.GetName(), err)
					continue
				}
				as(t, u, obj)
				if u.GetLabels()["app.kubernetes.io/part-of"] != "ms2m" {
					t.Errorf("%s %s lacks the label app.kubernetes.io/part-of=ms2m", u.GetKind(), u.GetName())
				}
				if ns := u.GetNamespace(); ns != "" && ns != namespace && !(u.GetKind() == "RoleBinding" && ns == "kube-system") &&
					!(u.GetKind() == "NetworkPolicy" && u.GetName() == release+"-replay-control") {
					t.Errorf("%s %s is in namespace %q, not the release's", u.GetKind(), u.GetName(), ns)
				}
			}
		})
	}
}
