package charts_test

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	configv1 "k8s.io/kube-scheduler/config/v1"
	"sigs.k8s.io/yaml"

	"github.com/ms2m/ms2m/scheduler"
)

// The rendered KubeSchedulerConfiguration is the documented example, and its
// URL reaches the manager's extender over TLS the CA verifies.
func TestSchedulerExtenderConfiguration(t *testing.T) {
	objs := render(t)
	dep := as(t, objs.get(t, "Deployment", release+"-manager"), &appsv1.Deployment{})
	mgr := dep.Spec.Template.Spec.Containers[0]
	f := flags(t, mgr)

	cm := as(t, objs.get(t, "ConfigMap", release+"-kube-scheduler-config"), &corev1.ConfigMap{})
	var got, example configv1.KubeSchedulerConfiguration
	if err := yaml.UnmarshalStrict([]byte(cm.Data["kube-scheduler-config.yaml"]), &got); err != nil {
		t.Fatalf("the rendered configuration is not a KubeSchedulerConfiguration: %v", err)
	}
	raw, err := os.ReadFile(filepath.Join(chartDir(), "examples", "kube-scheduler-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, &example); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(got, example) {
		t.Errorf("rendered configuration differs from examples/kube-scheduler-config.yaml:\ngot  %+v\nwant %+v", got, example)
	}
	x := got.Extenders[0]
	if "/"+x.FilterVerb != scheduler.FilterPath || "/"+x.PrioritizeVerb != scheduler.PrioritizePath {
		t.Errorf("verbs %s/%s; the extender serves %s and %s", x.FilterVerb, x.PrioritizeVerb, scheduler.FilterPath, scheduler.PrioritizePath)
	}
	u, err := url.Parse(x.URLPrefix)
	if err != nil || u.Scheme != "https" {
		t.Fatalf("urlPrefix %q is not an https URL: %v", x.URLPrefix, err)
	}
	svc, ns, _ := strings.Cut(u.Hostname(), ".")
	if !strings.HasPrefix(ns, namespace+".") {
		t.Errorf("urlPrefix %s is not in namespace %s", x.URLPrefix, namespace)
	}
	if target := serviceTarget(t, objs, svc, portOf(t, u.Host), dep.Spec.Template.Labels, mgr); target != portOf(t, f["scheduler-extender-bind-address"]) {
		t.Errorf("%s reaches container port %d; the extender serves %s", x.URLPrefix, target, f["scheduler-extender-bind-address"])
	}
	if filepath.Dir(f["scheduler-extender-cert-file"]) != f["webhook-cert-dir"] || filepath.Dir(f["scheduler-extender-key-file"]) != f["webhook-cert-dir"] {
		t.Errorf("extender certificate %s is not the mounted serving certificate in %s", f["scheduler-extender-cert-file"], f["webhook-cert-dir"])
	}
	secret := as(t, objs.get(t, "Secret", release+"-serving-cert"), &corev1.Secret{})
	verifyServing(t, objs, dep, secret.Data["ca.crt"], u.Hostname(), f["webhook-cert-dir"])
}
