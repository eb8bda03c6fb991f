package charts_test

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	configv1 "k8s.io/kube-scheduler/config/v1"
	"sigs.k8s.io/yaml"

	"github.com/ms2m/ms2m/webhooks"
)

func TestOptionalComponents(t *testing.T) {
	objs := render(t, everythingOn()...)

	t.Run("PodMonitor scrapes the injected sidecar's metrics port", func(t *testing.T) {
		pod := mutatedPod(t, webhooks.DefaultSidecarOptions())
		var sidecarPorts []string
		for _, c := range pod.Spec.Containers {
			for _, p := range c.Ports {
				sidecarPorts = append(sidecarPorts, p.Name)
			}
		}
		eps, _, _ := unstructured.NestedSlice(objs.get(t, "PodMonitor", release+"-replay-sidecars").Object, "spec", "podMetricsEndpoints")
		port, _, _ := unstructured.NestedString(eps[0].(map[string]any), "port")
		if !slices.Contains(sidecarPorts, port) {
			t.Errorf("PodMonitor scrapes port %q; the sidecar has %v", port, sidecarPorts)
		}
	})
	t.Run("ServiceMonitor selects the metrics Service", func(t *testing.T) {
		sm := objs.get(t, "ServiceMonitor", release+"-manager")
		sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
		var matched []string
		for _, s := range objs.ofKind("Service") {
			if labels.SelectorFromSet(sel).Matches(labels.Set(s.GetLabels())) {
				matched = append(matched, s.GetName())
			}
		}
		if len(matched) != 1 || matched[0] != release+"-manager-metrics" {
			t.Errorf("ServiceMonitor selects Services %v", matched)
		}
		// Without honorLabels Prometheus renames the metrics' own namespace
		// and endpoint labels to exported_*, and MS2MReplayNotConverging
		// names the manager's namespace, MS2MCertificateExpiresSoon groups
		// by the port name.
		eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		if len(eps) != 1 || eps[0].(map[string]any)["honorLabels"] != true {
			t.Errorf("ServiceMonitor endpoints %v; want honorLabels", eps)
		}
	})
	t.Run("secondary scheduler runs the extender configuration", func(t *testing.T) {
		cm := as(t, objs.get(t, "ConfigMap", release+"-scheduler"), &corev1.ConfigMap{})
		var cfg configv1.KubeSchedulerConfiguration
		if err := yaml.UnmarshalStrict([]byte(cm.Data["config.yaml"]), &cfg); err != nil {
			t.Fatalf("not a KubeSchedulerConfiguration: %v", err)
		}
		if len(cfg.Profiles) != 1 || cfg.Profiles[0].SchedulerName == nil || *cfg.Profiles[0].SchedulerName != release+"-scheduler" {
			t.Errorf("profiles %+v", cfg.Profiles)
		}
		if len(cfg.Extenders) != 1 || cfg.Extenders[0].URLPrefix != "https://"+release+"-scheduler-extender."+namespace+".svc:8444" {
			t.Errorf("extenders %+v", cfg.Extenders)
		}
		spec := podSpecOf(t, objs, "Deployment", release+"-scheduler")
		expectLockedDown(t, spec.Containers[0])
		if !strings.HasSuffix(spec.Containers[0].Image, ":v1.33.0") {
			t.Errorf("scheduler image %s; want the cluster's minor version", spec.Containers[0].Image)
		}
	})
	t.Run("agent pushes with the registry credentials", func(t *testing.T) {
		spec := podSpecOf(t, objs, "DaemonSet", release+"-agent")
		secret := as(t, objs.get(t, "Secret", release+"-agent-registry"), &corev1.Secret{})
		if secret.Type != corev1.SecretTypeDockerConfigJson {
			t.Errorf("registry Secret type %s", secret.Type)
		}
		var dockerConfig string
		for _, e := range spec.Containers[0].Env {
			if e.Name == "DOCKER_CONFIG" {
				dockerConfig = e.Value
			}
		}
		var mounted bool
		for _, m := range spec.Containers[0].VolumeMounts {
			for _, v := range spec.Volumes {
				mounted = mounted || v.Name == m.Name && v.Secret != nil && v.Secret.SecretName == secret.Name && m.MountPath == dockerConfig
			}
		}
		if dockerConfig == "" || !mounted {
			t.Errorf("DOCKER_CONFIG=%q is not where the Secret %s is mounted", dockerConfig, secret.Name)
		}
	})
	t.Run("control NetworkPolicy lets the manager's pods, and no other, reach the sidecar's control port", func(t *testing.T) {
		opts := webhooks.DefaultSidecarOptions()
		pod := mutatedPod(t, opts)
		var controlPort string
		for _, c := range pod.Spec.Containers {
			for _, p := range c.Ports {
				if p.ContainerPort == opts.ControlPort {
					controlPort = p.Name
				}
			}
		}
		manager := as(t, objs.get(t, "Deployment", release+"-manager"), &appsv1.Deployment{})
		var inNamespaces []string
		for _, u := range objs.ofKind("NetworkPolicy") {
			np := as(t, u, &networkingv1.NetworkPolicy{})
			inNamespaces = append(inNamespaces, np.Namespace)
			if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].From) != 1 || len(np.Spec.Ingress[0].Ports) != 1 {
				t.Fatalf("%s/%s: want one rule, from one peer, to one port: %+v", np.Namespace, np.Name, np.Spec.Ingress)
			}
			rule := np.Spec.Ingress[0]
			if p := rule.Ports[0].Port; p == nil || p.String() != controlPort || controlPort == "" {
				t.Errorf("%s: opens port %v; the sidecar's control port is named %q", np.Namespace, p, controlPort)
			}
			peer := rule.From[0]
			ns, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
			if err != nil || !ns.Matches(labels.Set{"kubernetes.io/metadata.name": namespace}) || ns.Matches(labels.Set{"kubernetes.io/metadata.name": np.Namespace}) {
				t.Errorf("%s: namespace selector %v does not select exactly the release namespace %s", np.Namespace, peer.NamespaceSelector, namespace)
			}
			pods, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
			if err != nil || pods.Empty() || !pods.Matches(labels.Set(manager.Spec.Template.Labels)) {
				t.Errorf("%s: pod selector %v does not select the manager's pods %v", np.Namespace, peer.PodSelector, manager.Spec.Template.Labels)
			}
		}
		if slices.Sort(inNamespaces); !slices.Equal(inNamespaces, []string{"billing", "shop"}) {
			t.Errorf("NetworkPolicies in %v; want billing and shop", inNamespaces)
		}
	})
}

// mutatedPod is a migratable pod as the webhook prepares it with opts.
func mutatedPod(t *testing.T, opts webhooks.SidecarOptions) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{}
	pod.Annotations = map[string]string{
		"ms2m.io/migratable": "true", "ms2m.io/kafka-brokers": "kafka:9092",
		"ms2m.io/kafka-topic": "t", "ms2m.io/kafka-group": "g", "ms2m.io/app-port": "8080",
	}
	pod.Spec.Containers = []corev1.Container{{Name: "app"}}
	if errs := webhooks.Mutate(pod, opts); len(errs) > 0 {
		t.Fatal(errs)
	}
	return pod
}
