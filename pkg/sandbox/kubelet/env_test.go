package kubelet

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "1", "B": "two"}
	for in, want := range map[string]string{
		"plain":         "plain",
		"$(A)-$(B)":     "1-two",
		"$$(A)":         "$(A)",
		"$(MISSING)":    "$(MISSING)",
		"x$(A":          "x$(A",
		"cost $5":       "cost $5",
		"--port=$(A)0$": "--port=10$",
	} {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolveEnv(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1", Labels: map[string]string{"app": "x"}},
		Spec: corev1.PodSpec{NodeName: "n1", ServiceAccountName: "sa"}}
	cs := fake.NewClientset(
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm", Namespace: "ns"}, Data: map[string]string{"K": "from-cm"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "ns"}, Data: map[string][]byte{"pw": []byte("hunter2")}},
	)
	r := envResolver{ctx: context.Background(), client: cs, pod: pod, podIP: "127.1.0.5", hostIP: "127.2.0.1"}
	field := func(p string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: p}}
	}
	c := &corev1.Container{
		EnvFrom: []corev1.EnvFromSource{{Prefix: "CM_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}}}},
		Env: []corev1.EnvVar{
			{Name: "POD_IP", ValueFrom: field("status.podIP")},
			{Name: "NODE", ValueFrom: field("spec.nodeName")},
			{Name: "APP", ValueFrom: field("metadata.labels['app']")},
			{Name: "URL", Value: "http://$(POD_IP):8080"},
			{Name: "PW", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "pw"}}},
		},
	}
	env, _, err := r.resolve(c)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"CM_K=from-cm", "POD_IP=127.1.0.5", "NODE=n1", "APP=x", "URL=http://127.1.0.5:8080", "PW=hunter2"}
	if len(env) != len(want) {
		t.Fatalf("env = %v, want %v", env, want)
	}
	for i := range want {
		if env[i] != want[i] {
			t.Errorf("env[%d] = %q, want %q", i, env[i], want[i])
		}
	}
	c.Env = []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Key: "k"}}}}
	c.EnvFrom = nil
	if _, _, err := r.resolve(c); err == nil {
		t.Fatal("a missing configmap did not fail the container's start")
	}
}

func TestIPPoolNeverRepeatsALiveAddress(t *testing.T) {
	p := newIPPool("127.1.0.0/16")
	seen := map[string]bool{}
	for range 600 {
		ip, err := p.get()
		if err != nil {
			t.Fatal(err)
		}
		if seen[ip] {
			t.Fatalf("%s handed out twice", ip)
		}
		seen[ip] = true
	}
	if seen["127.1.0.0"] || seen["127.1.0.255"] || seen["127.1.1.0"] {
		t.Fatal("network or broadcast-looking address handed out")
	}
}

// A restarted container sees the pod's annotations as they are at the
// restart, as the kubelet builds the environment at every start: the
// replay sidecar learns it was fenced or handed over this way.
func TestRestartReadsTheDownwardAPIAgain(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}}
	field := &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['mode']"}}
	c := &container{
		spec: corev1.Container{Env: []corev1.EnvVar{{Name: "MODE", ValueFrom: field}, {Name: "KEEP", Value: "1"}}},
		env:  []string{"PATH=/bin", "MODE=", "KEEP=1"},
	}
	pr := &podRuntime{ip: "127.1.0.5", node: &node{ip: "127.2.0.1"}}
	pod.Annotations = map[string]string{"mode": "fenced"}
	pr.refreshFieldEnv(c, pod)
	if want := []string{"PATH=/bin", "MODE=fenced", "KEEP=1"}; !slices.Equal(c.env, want) {
		t.Fatalf("env after the restart %v; want %v", c.env, want)
	}
}

// A container's limits and requests reach it through resourceFieldRef, as
// the kubelet gives them (the sidecar sizes its Go memory limit from it).
func TestResourceFieldRefResolvesTheContainersResources(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "ms2m-replay", Resources: corev1.ResourceRequirements{
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi"), corev1.ResourceCPU: resource.MustParse("250m")},
		Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")},
	}}}}}
	for _, tc := range []struct {
		ref  corev1.ResourceFieldSelector
		want string
	}{
		{corev1.ResourceFieldSelector{ContainerName: "ms2m-replay", Resource: "limits.memory"}, "67108864"},
		{corev1.ResourceFieldSelector{ContainerName: "ms2m-replay", Resource: "requests.memory", Divisor: resource.MustParse("1Mi")}, "32"},
		{corev1.ResourceFieldSelector{ContainerName: "ms2m-replay", Resource: "limits.cpu", Divisor: resource.MustParse("1m")}, "250"},
		{corev1.ResourceFieldSelector{ContainerName: "ms2m-replay", Resource: "limits.cpu"}, "1"},
		{corev1.ResourceFieldSelector{ContainerName: "ms2m-replay", Resource: "requests.cpu"}, ""},
	} {
		got, err := resourceValue(pod, &tc.ref)
		if err != nil || got != tc.want {
			t.Errorf("%s /%s: %q, %v; want %q", tc.ref.Resource, tc.ref.Divisor.String(), got, err, tc.want)
		}
	}
}
