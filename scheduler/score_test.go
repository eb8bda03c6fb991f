package scheduler

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// Each case compares two nodes that differ in one criterion: the better
// one must score strictly higher, with the default weights.
func TestScorePrefersTheCheaperMove(t *testing.T) {
	src := testNode("src", withZone("r1", "r1-a"))
	cases := []struct {
		name          string
		pod           *corev1.Pod
		better, worse *corev1.Node
		objs          []client.Object
	}{
		{name: "more room after placement", pod: testPod("p"),
			better: testNode("big", withAllocatable("16", "64Gi")), worse: testNode("small", withAllocatable("1", "2Gi"))},
		{name: "less already requested", pod: testPod("p"),
			better: testNode("idle"), worse: testNode("busy"),
			objs: []client.Object{testPod("x", boundTo("busy"), withRequests("3", "6Gi"))}},
		{name: "same zone as the source", pod: testPod("p", migratingFrom("src")),
			better: testNode("near", withZone("r1", "r1-a")), worse: testNode("far", withZone("r2", "r2-a"))},
		{name: "same region beats other region", pod: testPod("p", migratingFrom("src")),
			better: testNode("region", withZone("r1", "r1-b")), worse: testNode("far", withZone("r2", "r2-a"))},
		{name: "checkpoint image already there", pod: testPod("p", withImage("registry:5000/cp/consumer@sha256:aa")),
			better: testNode("cached", withImages("registry:5000/cp/consumer@sha256:aa")), worse: testNode("cold")},
		{name: "base image already there", pod: testPod("p", withBaseImages("example/consumer:1, busybox")),
			better: testNode("cached", withImages("docker.io/example/consumer:1", "docker.io/library/busybox:latest")),
			worse:  testNode("cold", withImages("docker.io/library/busybox:latest"))},
		{name: "fewer migrations heading there", pod: testPod("p"),
			better: testNode("quiet"), worse: testNode("busy"),
			objs: []client.Object{migration("m1", "busy", v1.PhaseRestoring), migration("m2", "busy", v1.PhaseReplaying)}},
		{name: "the pod's own migration does not count", pod: testPod("p", ofMigration("mine")),
			better: testNode("a-mine"), worse: testNode("b-other"),
			objs: []client.Object{migration("mine", "a-mine", v1.PhaseRestoring), migration("theirs", "b-other", v1.PhaseRestoring)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := NewCacheFrom(append(tc.objs, src, tc.better, tc.worse)...)
			r := RankNodes(tc.pod, []string{tc.worse.Name, tc.better.Name}, st, DefaultChecks(), DefaultScorer())
			if len(r.Fit) != 2 {
				t.Fatalf("both nodes must fit: %+v refused %v", r.Fit, r.Refused)
			}
			if r.Fit[0].Node != tc.better.Name || r.Fit[0].Score <= r.Fit[1].Score {
				t.Fatalf("ranking %+v; want %s strictly first", r.Fit, tc.better.Name)
			}
			for _, f := range r.Fit {
				if f.Score < 0 || f.Score > 10 {
					t.Errorf("score %d of %s out of 0..10", f.Score, f.Node)
				}
			}
		})
	}
}

func TestScoreBounds(t *testing.T) {
	st := NewCacheFrom(
		testNode("src", withZone("r1", "r1-a")),
		testNode("best", withZone("r1", "r1-a"), withAllocatable("1000", "1000Ti"), withImages("docker.io/example/consumer:1")),
		testNode("full", withZone("r9", "r9-z"), withAllocatable("100m", "100Mi")),
		migration("m", "full", v1.PhaseReplaying),
	)
	p := NewPodInfo(testPod("p", migratingFrom("src")), st)
	best, _ := st.Node("best")
	full, _ := st.Node("full")
	if got := DefaultScorer().Score(p, best); got != 10 {
		t.Errorf("a node best in every respect scores %d; want 10", got)
	}
	// Nothing free, other region, no image, one migration in flight:
	// only the inbound term (weight 2 of 10, halved) remains.
	if got := DefaultScorer().Score(p, full); got != 1 {
		t.Errorf("a node worst in every respect scores %d; want 1", got)
	}
	if got := (Scorer{}).Score(p, best); got != 0 {
		t.Errorf("zero weights score %d; want 0", got)
	}
}

func TestRankNodesReportsRefusalsAndBreaksTiesByName(t *testing.T) {
	st := NewCacheFrom(testNode("src"), testNode("b"), testNode("a"), testNode("no-criu", withoutLabel(v1.LabelCRIUVersion)))
	r := RankNodes(testPod("p", migratingFrom("src")), []string{"b", "src", "a", "no-criu", "ghost"}, st, DefaultChecks(), DefaultScorer())
	if len(r.Fit) != 2 || r.Fit[0].Node != "a" || r.Fit[1].Node != "b" {
		t.Fatalf("fit = %+v; want a then b (equal scores, by name)", r.Fit)
	}
	for node, reason := range map[string]string{"src": ReasonSourceNode, "no-criu": ReasonCheckpointRestoreUnsupported, "ghost": ReasonUnknownNode} {
		if r.Refused[node].Reason != reason {
			t.Errorf("%s refused with %q; want %s", node, r.Refused[node].Reason, reason)
		}
	}
}
