package migratable

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/replay"
)

func hostnameValues(p *corev1.Pod) [][]string {
	var out [][]string
	for _, t := range p.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, r := range t.MatchExpressions {
			if r.Key == corev1.LabelHostname {
				out = append(out, r.Values)
			}
		}
	}
	return out
}

// A pod that an earlier migration moved carries that migration's pin to
// its node; migrating it again must replace the pin, not AND a second one
// onto it (which no node satisfies).
func TestBuildTargetRepinsAMigratedPod(t *testing.T) {
	first := &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: "a", UID: "aaaaaaaa-1"}, Status: v1.StatefulMigrationStatus{TargetNode: "node-2"}}
	src := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: "ns"},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "app"}},
			Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{
					{Key: "disk", Operator: corev1.NodeSelectorOpIn, Values: []string{"ssd"}},
				}}}}}}},
	}
	moved, err := BuildTarget(first, src, nil, "app")
	if err != nil {
		t.Fatal(err)
	}
	if got := hostnameValues(moved); len(got) != 1 || got[0][0] != "node-2" {
		t.Fatalf("first move pins %v, want [[node-2]]", got)
	}
	moved.Spec.NodeName = "node-2"
	second := &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: "b", UID: "bbbbbbbb-2"}, Status: v1.StatefulMigrationStatus{TargetNode: "node-1"}}
	again, err := BuildTarget(second, moved, nil, "app")
	if err != nil {
		t.Fatal(err)
	}
	if got := hostnameValues(again); len(got) != 1 || got[0][0] != "node-1" {
		t.Fatalf("second move pins %v, want only [[node-1]]", got)
	}
	if n := len(again.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions); n != 2 {
		t.Fatalf("the pod's own requirement was lost: %d requirements", n)
	}
	if got := hostnameValues(moved); len(got) != 1 || got[0][0] != "node-2" {
		t.Fatalf("building a target changed the source's affinity: %v", got)
	}
}

func TestReplayFromEnv(t *testing.T) {
	offs := []v1.PartitionOffset{{Topic: "orders", Partition: 0, Offset: 12}, {Topic: "orders", Partition: 1, Offset: 40}}
	if env := ReplayFromEnv(offs); env != `{"0":12,"1":40}` {
		t.Fatalf("MS2M_REPLAY_FROM = %s", env)
	}
}

// A target is the static member its source was: it joins with the
// source's group.instance.id (the broker then hands it the source's place
// without a rebalance), and so does a pod migrated a second time. Its
// sidecar reads its mode from the pod, and the source's "fenced" is not
// copied onto it.
func TestBuildTargetKeepsTheSourcesInstanceID(t *testing.T) {
	byName := &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}
	src := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "orders-7d9f", Namespace: "ns", Annotations: map[string]string{v1.AnnotationSidecarMode: v1.SidecarModeFenced}},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "app"},
			{Name: v1.SidecarContainerName, Env: []corev1.EnvVar{{Name: replay.EnvGroupInstanceID, ValueFrom: byName}}}}},
	}
	m := &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: "a", UID: "aaaaaaaa-1"},
		Spec: v1.StatefulMigrationSpec{SourcePod: src.Name}, Status: v1.StatefulMigrationStatus{TargetNode: "node-2"}}
	target, err := BuildTarget(m, src, nil, "app")
	if err != nil {
		t.Fatal(err)
	}
	env := Sidecar(target).Env
	if i := slices.IndexFunc(env, func(e corev1.EnvVar) bool { return e.Name == replay.EnvGroupInstanceID }); i < 0 || env[i].Value != src.Name || env[i].ValueFrom != nil {
		t.Fatalf("target's instance id %+v; want the value %q", env, src.Name)
	}
	if !slices.ContainsFunc(env, func(e corev1.EnvVar) bool { return e.Name == replay.EnvMode && e.ValueFrom != nil }) {
		t.Fatalf("target's sidecar reads no mode from the pod: %+v", env)
	}
	if _, ok := target.Annotations[v1.AnnotationSidecarMode]; ok {
		t.Fatal("the source's sidecar mode was copied onto the target")
	}
	if e := Sidecar(src).Env[0]; e.ValueFrom == nil {
		t.Fatal("building the target changed the source's environment")
	}
}

// The restored pod pulls the app's base image onto its node before the app
// container is restored (CRI-O does not pull it; containerd pulls it
// without the pod's pull secrets): with the pod's own pull policy and
// secrets, through init containers that need nothing from the base image
// but to exist. Migrating the restored pod again pulls the same base
// image, not the checkpoint image, and does not stack init containers.
func TestBuildTargetPullsTheBaseImageFirst(t *testing.T) {
	m := &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: "a", UID: "aaaaaaaa-1"},
		Status: v1.StatefulMigrationStatus{TargetNode: "node-2", CheckpointImage: "reg.example/ck@sha256:" + strings.Repeat("1", 64)}}
	src := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: "ns"},
		Spec: corev1.PodSpec{NodeName: "node-1", ImagePullSecrets: []corev1.LocalObjectReference{{Name: "private"}},
			InitContainers: []corev1.Container{{Name: "migrate-db", Image: "busybox"}},
			Containers: []corev1.Container{
				{Name: "app", Image: "private.example/shop/orders:1.4", ImagePullPolicy: corev1.PullAlways},
				{Name: v1.SidecarContainerName, Image: "ghcr.io/ms2m/ms2m:v0.1.0", Command: []string{"/ms2m/ms2m-replay"}},
			}},
	}
	check := func(p *corev1.Pod) {
		t.Helper()
		names := []string{}
		for _, c := range p.Spec.InitContainers {
			names = append(names, c.Name)
		}
		if !slices.Equal(names, []string{InitInstallNoop, InitPullBase, "migrate-db"}) {
			t.Fatalf("init containers %v", names)
		}
		install, pull := p.Spec.InitContainers[0], p.Spec.InitContainers[1]
		if install.Image != "ghcr.io/ms2m/ms2m:v0.1.0" || !slices.Equal(install.Command, []string{"/ms2m/ms2m-replay", "--install-to=/ms2m-base-image-tools/ms2m-replay"}) {
			t.Errorf("install: %s %v", install.Image, install.Command)
		}
		if pull.Image != "private.example/shop/orders:1.4" || pull.ImagePullPolicy != corev1.PullAlways ||
			!slices.Equal(pull.Command, []string{"/ms2m-base-image-tools/ms2m-replay", "--noop"}) {
			t.Errorf("pull: %s %s %v", pull.Image, pull.ImagePullPolicy, pull.Command)
		}
		for _, c := range []corev1.Container{install, pull} {
			sc := c.SecurityContext
			if sc == nil || !*sc.RunAsNonRoot || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 {
				t.Errorf("%s is not restricted: %+v", c.Name, sc)
			}
		}
		if p.Spec.Containers[0].Image != m.Status.CheckpointImage || len(p.Spec.ImagePullSecrets) != 1 {
			t.Errorf("app image %s, pull secrets %v", p.Spec.Containers[0].Image, p.Spec.ImagePullSecrets)
		}
		if n := len(slices.DeleteFunc(slices.Clone(p.Spec.Volumes), func(v corev1.Volume) bool { return v.Name != volumeBaseImage })); n != 1 {
			t.Errorf("%d %s volumes", n, volumeBaseImage)
		}
	}
	moved, err := BuildTarget(m, src, nil, "app")
	if err != nil {
		t.Fatal(err)
	}
	check(moved)
	second := m.DeepCopy()
	second.Name, second.UID, second.Status.TargetNode = "b", "bbbbbbbb-2", "node-3"
	second.Status.CheckpointImage = "reg.example/ck@sha256:" + strings.Repeat("2", 64)
	m = second
	again, err := BuildTarget(second, moved, nil, "app")
	if err != nil {
		t.Fatal(err)
	}
	check(again)
}
