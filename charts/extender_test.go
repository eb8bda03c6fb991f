package charts_test

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	configv1 "k8s.io/kube-scheduler/config/v1"
	"sigs.k8s.io/yaml"

	"github.com/ms2m/ms2m/scheduler"
)

// The rendered KubeSchedulerConfiguration is the documented example, and its
// URL reaches the manager's extender over TLS the CA verifies.
func TestSchedulerExtenderConfiguration(t *testing.T) {
	mgr := renderManager(t)

	cm := as(t, mgr.objs.get(t, "ConfigMap", release+"-kube-scheduler-config"), &corev1.ConfigMap{})
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
	if target := mgr.serviceTarget(t, svc, portOf(t, u.Host)); target != portOf(t, mgr.flags["scheduler-extender-bind-address"]) {
		t.Errorf("%s reaches container port %d; the extender serves %s", x.URLPrefix, target, mgr.flags["scheduler-extender-bind-address"])
	}
	if filepath.Dir(mgr.flags["scheduler-extender-cert-file"]) != mgr.flags["webhook-cert-dir"] || filepath.Dir(mgr.flags["scheduler-extender-key-file"]) != mgr.flags["webhook-cert-dir"] {
		t.Errorf("extender certificate %s is not the mounted serving certificate in %s", mgr.flags["scheduler-extender-cert-file"], mgr.flags["webhook-cert-dir"])
	}
	secret := as(t, mgr.objs.get(t, "Secret", release+"-serving-cert"), &corev1.Secret{})
	mgr.verifyServing(t, secret.Data["ca.crt"], u.Hostname())
}
