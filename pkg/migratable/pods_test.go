package migratable

import (
	"slices"
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
