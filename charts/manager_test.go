package charts_test

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
)

func TestManagerDeployment(t *testing.T) {
	objs := render(t)
	dep := as(t, objs.get(t, "Deployment", release+"-manager"), &appsv1.Deployment{})
	spec := dep.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("manager pod has %d containers", len(spec.Containers))
	}
	mgr := spec.Containers[0]
	f := flags(t, mgr)

	t.Run("leader election with a standby", func(t *testing.T) {
		if f["leader-elect"] != "true" || f["leader-election-namespace"] != namespace {
			t.Errorf("--leader-elect=%s --leader-election-namespace=%s", f["leader-elect"], f["leader-election-namespace"])
		}
		if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 {
			t.Errorf("replicas %v: no standby", dep.Spec.Replicas)
		}
		pdb := objs.get(t, "PodDisruptionBudget", release+"-manager")
		sel, _, _ := unstructured.NestedStringMap(pdb.Object, "spec", "selector", "matchLabels")
		if !labels.SelectorFromSet(sel).Matches(labels.Set(dep.Spec.Template.Labels)) {
			t.Errorf("the PodDisruptionBudget selects %v, not the manager pods", sel)
		}
	})
	t.Run("probes hit the health endpoint", func(t *testing.T) {
		health := portOf(t, f["health-probe-bind-address"])
		for name, p := range map[string]*corev1.Probe{"liveness": mgr.LivenessProbe, "readiness": mgr.ReadinessProbe} {
			if p == nil || p.HTTPGet == nil {
				t.Errorf("no HTTP %s probe", name)
				continue
			}
			if got := containerPort(t, mgr, p.HTTPGet.Port); got != health {
				t.Errorf("%s probe on port %d; health is served on %d", name, got, health)
			}
		}
		if mgr.LivenessProbe.HTTPGet.Path != "/healthz" || mgr.ReadinessProbe.HTTPGet.Path != "/readyz" {
			t.Errorf("probe paths %s and %s", mgr.LivenessProbe.HTTPGet.Path, mgr.ReadinessProbe.HTTPGet.Path)
		}
	})
	t.Run("metrics Service", func(t *testing.T) {
		if got := serviceTarget(t, objs, release+"-manager-metrics", 8080, dep.Spec.Template.Labels, mgr); got != portOf(t, f["metrics-bind-address"]) {
			t.Errorf("metrics Service reaches port %d; metrics are on %s", got, f["metrics-bind-address"])
		}
	})
	t.Run("the sidecar comes from the same image", func(t *testing.T) {
		if f["sidecar-image"] != mgr.Image {
			t.Errorf("--sidecar-image=%s, manager image %s", f["sidecar-image"], mgr.Image)
		}
	})
	t.Run("non-root, read-only, no capabilities", func(t *testing.T) {
		psc := spec.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
			t.Errorf("pod securityContext %+v does not run as non-root", psc)
		}
		expectLockedDown(t, mgr)
	})
}
