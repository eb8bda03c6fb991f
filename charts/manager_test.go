package charts_test

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestManagerDeployment(t *testing.T) {
	mgr := renderManager(t)

	t.Run("leader election with a standby", func(t *testing.T) {
		if mgr.flags["leader-elect"] != "true" || mgr.flags["leader-election-namespace"] != namespace {
			t.Errorf("--leader-elect=%s --leader-election-namespace=%s", mgr.flags["leader-elect"], mgr.flags["leader-election-namespace"])
		}
		if mgr.dep.Spec.Replicas == nil || *mgr.dep.Spec.Replicas < 2 {
			t.Errorf("replicas %v: no standby", mgr.dep.Spec.Replicas)
		}
		pdb := mgr.objs.get(t, "PodDisruptionBudget", release+"-manager")
		sel, _, _ := unstructured.NestedStringMap(pdb.Object, "spec", "selector", "matchLabels")
		if !labels.SelectorFromSet(sel).Matches(labels.Set(mgr.dep.Spec.Template.Labels)) {
			t.Errorf("the PodDisruptionBudget selects %v, not the manager pods", sel)
		}
	})
	t.Run("probes hit the health endpoint", func(t *testing.T) {
		health := portOf(t, mgr.flags["health-probe-bind-address"])
		for name, p := range map[string]*corev1.Probe{"liveness": mgr.ctr.LivenessProbe, "readiness": mgr.ctr.ReadinessProbe} {
			if p == nil || p.HTTPGet == nil {
				t.Errorf("no HTTP %s probe", name)
				continue
			}
			if got := containerPort(t, mgr.ctr, p.HTTPGet.Port); got != health {
				t.Errorf("%s probe on port %d; health is served on %d", name, got, health)
			}
		}
		if mgr.ctr.LivenessProbe.HTTPGet.Path != "/healthz" || mgr.ctr.ReadinessProbe.HTTPGet.Path != "/readyz" {
			t.Errorf("probe paths %s and %s", mgr.ctr.LivenessProbe.HTTPGet.Path, mgr.ctr.ReadinessProbe.HTTPGet.Path)
		}
	})
	t.Run("metrics Service", func(t *testing.T) {
		if got := mgr.serviceTarget(t, release+"-manager-metrics", 8080); got != portOf(t, mgr.flags["metrics-bind-address"]) {
			t.Errorf("metrics Service reaches port %d; metrics are on %s", got, mgr.flags["metrics-bind-address"])
		}
	})
	t.Run("the sidecar comes from the same image", func(t *testing.T) {
		if mgr.flags["sidecar-image"] != mgr.ctr.Image {
			t.Errorf("--sidecar-image=%s, manager image %s", mgr.flags["sidecar-image"], mgr.ctr.Image)
		}
	})
	t.Run("non-root, read-only, no capabilities", func(t *testing.T) {
		psc := mgr.dep.Spec.Template.Spec.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
			t.Errorf("pod securityContext %+v does not run as non-root", psc)
		}
		expectLockedDown(t, mgr.ctr)
	})
}

// managerPod is the manager of the chart rendered with its defaults.
type managerPod struct {
	objs  objects
	dep   *appsv1.Deployment
	ctr   corev1.Container
	flags map[string]string
}

func renderManager(t *testing.T) managerPod {
	t.Helper()
	objs := render(t)
	dep := as(t, objs.get(t, "Deployment", release+"-manager"), &appsv1.Deployment{})
	if n := len(dep.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("manager pod has %d containers", n)
	}
	ctr := dep.Spec.Template.Spec.Containers[0]
	return managerPod{objs: objs, dep: dep, ctr: ctr, flags: flags(t, ctr)}
}

// serviceTarget resolves Service name, port to the manager's container port
// it reaches, failing unless the Service selects the manager's pods.
func (m managerPod) serviceTarget(t *testing.T, name string, port int32) int32 {
	t.Helper()
	podLabels, c := m.dep.Spec.Template.Labels, m.ctr
	svc := as(t, m.objs.get(t, "Service", name), &corev1.Service{})
	if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(podLabels)) {
		t.Fatalf("Service %s selects %v, not the pods labelled %v", name, svc.Spec.Selector, podLabels)
	}
	for _, p := range svc.Spec.Ports {
		if p.Port != port {
			continue
		}
		if p.TargetPort.Type == intstr.Int {
			return p.TargetPort.IntVal
		}
		for _, cp := range c.Ports {
			if cp.Name == p.TargetPort.StrVal {
				return cp.ContainerPort
			}
		}
		t.Fatalf("Service %s targets port %q, which container %s does not name", name, p.TargetPort.StrVal, c.Name)
	}
	t.Fatalf("Service %s has no port %d", name, port)
	return 0
}
