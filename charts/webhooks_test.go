package charts_test

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

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

// The pod webhook fails closed only for the pods it acts on, the eviction
// webhook fails open, neither sees kube-system, and each has an alert for
// the calls the API server could not make: the metric that counts them
// depends on the failure policy (a refused creation, or an eviction let
// through).
func TestWebhooksAreScopedAndAlerted(t *testing.T) {
	all := objs(t)
	rendered := map[string]admissionregistrationv1.MutatingWebhook{}
	mwc := as(t, all.get(t, "MutatingWebhookConfiguration", release+"-mutating-webhook-configuration"), &admissionregistrationv1.MutatingWebhookConfiguration{})
	for _, h := range mwc.Webhooks {
		rendered[h.Name] = h
	}
	vwc := as(t, all.get(t, "ValidatingWebhookConfiguration", release+"-validating-webhook-configuration"), &admissionregistrationv1.ValidatingWebhookConfiguration{})
	for _, h := range vwc.Webhooks {
		rendered[h.Name] = admissionregistrationv1.MutatingWebhook{Name: h.Name, FailurePolicy: h.FailurePolicy,
			NamespaceSelector: h.NamespaceSelector, MatchConditions: h.MatchConditions}
	}
	wantPolicy := map[string]admissionregistrationv1.FailurePolicyType{
		webhooks.PodMutationWebhook: admissionregistrationv1.Fail,
		webhooks.PodEvictionWebhook: admissionregistrationv1.Ignore,
	}
	kubeSystem := labels.Set{corev1.LabelMetadataName: metav1.NamespaceSystem}
	apps := labels.Set{corev1.LabelMetadataName: "shop"}

	rule := all.get(t, "PrometheusRule", release)
	groups, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
	var exprs []string
	for _, g := range groups {
		rules, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
		for _, r := range rules {
			e, _, _ := unstructured.NestedString(r.(map[string]any), "expr")
			exprs = append(exprs, e)
		}
	}

	for name, scope := range webhooks.Scopes() {
		h, ok := rendered[name]
		if !ok {
			t.Errorf("the chart does not register webhook %s", name)
			continue
		}
		if h.FailurePolicy == nil || *h.FailurePolicy != wantPolicy[name] {
			t.Errorf("webhook %s: failurePolicy %s; want %s", name, ptr.Deref(h.FailurePolicy, "unset"), wantPolicy[name])
		}
		if !equality.Semantic.DeepEqual(h.MatchConditions, scope.MatchConditions) {
			t.Errorf("webhook %s: matchConditions %+v; want webhooks.Scopes' %+v (run `make generate`)", name, h.MatchConditions, scope.MatchConditions)
		}
		sel, err := metav1.LabelSelectorAsSelector(h.NamespaceSelector)
		if h.NamespaceSelector == nil || err != nil || sel.Matches(kubeSystem) || !sel.Matches(apps) {
			t.Errorf("webhook %s: namespaceSelector %v (%v); want every namespace but kube-system", name, h.NamespaceSelector, err)
		}
		metric := `apiserver_admission_webhook_rejection_count{name="` + name + `",error_type="calling_webhook_error"}`
		if wantPolicy[name] == admissionregistrationv1.Ignore {
			metric = `apiserver_admission_webhook_fail_open_count{name="` + name + `"}`
		}
		if !slices.ContainsFunc(exprs, func(e string) bool { return strings.Contains(e, metric) }) {
			t.Errorf("no alert on %s: the API server failing to call webhook %s goes unnoticed", metric, name)
		}
	}
	if h := rendered[webhooks.PodMutationWebhook]; len(h.MatchConditions) != 1 || h.MatchConditions[0].Expression != webhooks.PodMutationCondition {
		t.Errorf("webhook %s is called for pods that do not need it: matchConditions %+v", webhooks.PodMutationWebhook, h.MatchConditions)
	}
}
