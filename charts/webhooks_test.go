package charts_test

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/ms2m/ms2m/webhooks"
)

// Every webhook the API server calls reaches the manager's webhook server,
// on the path the code serves, over TLS the CA bundle verifies; apart from
// where it is served, each is exactly what the code's markers generated.
func TestWebhooksReachTheManager(t *testing.T) {
	mgr := renderManager(t)

	raw, err := os.ReadFile(filepath.Join(repoRoot(), "config", "webhook", "manifests.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	generated := decodeAll(t, string(raw))
	served := map[string]string{"pods.ms2m.io": webhooks.PodMutationPath, "evictions.ms2m.io": webhooks.PodEvictionPath}
	var n int
	for _, want := range generated {
		got := mgr.objs.get(t, want.GetKind(), release+"-"+want.GetName())
		gotHooks, _, _ := unstructured.NestedSlice(got.Object, "webhooks")
		wantHooks, _, _ := unstructured.NestedSlice(want.Object, "webhooks")
		if len(gotHooks) != len(wantHooks) {
			t.Fatalf("%s %s: the chart registers %d webhooks, config/webhook %d", got.GetKind(), got.GetName(), len(gotHooks), len(wantHooks))
		}
		for i := range gotHooks {
			g, w := gotHooks[i].(map[string]any), wantHooks[i].(map[string]any)
			var cc admissionregistrationv1.WebhookClientConfig
			if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(g["clientConfig"].(map[string]any), &cc, true); err != nil {
				t.Fatal(err)
			}
			wantPath, _, _ := unstructured.NestedString(w, "clientConfig", "service", "path")
			delete(g, "clientConfig")
			delete(w, "clientConfig")
			if !equality.Semantic.DeepEqual(g, w) {
				t.Errorf("webhook %s differs from config/webhook (run `make generate`):\ngot  %v\nwant %v", g["name"], g, w)
			}
			name := g["name"].(string)
			n++
			if cc.Service == nil || cc.Service.Path == nil || *cc.Service.Path != wantPath {
				t.Fatalf("webhook %s: clientConfig %+v; want path %s", name, cc, wantPath)
			}
			if path, ok := served[name]; ok && *cc.Service.Path != path {
				t.Errorf("webhook %s calls %s; the manager serves it on %s", name, *cc.Service.Path, path)
			}
			if cc.Service.Namespace != namespace {
				t.Errorf("webhook %s calls a Service in %q", name, cc.Service.Namespace)
			}
			port := int32(443)
			if cc.Service.Port != nil {
				port = *cc.Service.Port
			}
			if target := mgr.serviceTarget(t, cc.Service.Name, port); strconv.Itoa(int(target)) != mgr.flags["webhook-port"] {
				t.Errorf("webhook Service %s:%d reaches container port %d; the manager serves --webhook-port=%s", cc.Service.Name, port, target, mgr.flags["webhook-port"])
			}
			mgr.verifyServing(t, cc.CABundle, cc.Service.Name+"."+namespace+".svc")
		}
	}
	if n < len(served) {
		t.Errorf("the chart registers %d webhooks; the manager serves %d", n, len(served))
	}
}
