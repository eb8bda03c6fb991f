package scheduler

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

func TestChecks(t *testing.T) {
	pv, pvc := localVolume("pv-local", "data", "node-a")
	cases := []struct {
		name string
		pod  *corev1.Pod
		node *corev1.Node
		// want is the reason, "" when the node fits.
		want         string
		unresolvable bool
		// mention must appear in the message a user reads.
		mention string
	}{
		{name: "capable node fits", pod: testPod("p"), node: testNode("node-b")},
		{name: "ordinary pod fits anywhere capable", pod: testPod("p"), node: testNode("src")},

		{name: "source node refused", pod: testPod("p", migratingFrom("src")), node: testNode("src"),
			want: ReasonSourceNode, unresolvable: true, mention: "migrating away"},

		{name: "no restore label", pod: testPod("p"), node: testNode("cand-7", withoutLabel(v1.LabelCheckpointRestore)),
			want: ReasonCheckpointRestoreUnsupported, unresolvable: true, mention: v1.LabelCheckpointRestore},
		{name: "restore label false", pod: testPod("p"), node: testNode("cand-7", withLabel(v1.LabelCheckpointRestore, "false")),
			want: ReasonCheckpointRestoreUnsupported, unresolvable: true, mention: `not "true"`},
		{name: "runtime not probed", pod: testPod("p"), node: testNode("cand-7", withoutLabel(v1.LabelRuntime)),
			want: ReasonCheckpointRestoreUnsupported, unresolvable: true, mention: v1.LabelRuntime},
		{name: "runtime version missing", pod: testPod("p"), node: testNode("cand-7", withLabel(v1.LabelRuntimeVersion, "")),
			want: ReasonCheckpointRestoreUnsupported, unresolvable: true, mention: v1.LabelRuntimeVersion},
		{name: "no CRIU version", pod: testPod("p"), node: testNode("cand-7", withoutLabel(v1.LabelCRIUVersion)),
			want: ReasonCheckpointRestoreUnsupported, unresolvable: true, mention: v1.LabelCRIUVersion},

		{name: "other architecture", pod: testPod("p", migratingFrom("src")), node: testNode("cand-7", withLabel(corev1.LabelArchStable, "arm64")),
			want: ReasonPlatformMismatch, unresolvable: true, mention: "linux/arm64"},
		{name: "other OS", pod: testPod("p", migratingFrom("src")), node: testNode("cand-7", withLabel(corev1.LabelOSStable, "windows")),
			want: ReasonPlatformMismatch, unresolvable: true, mention: "windows/amd64"},
		{name: "arch unknown on node", pod: testPod("p", migratingFrom("src")), node: testNode("cand-7", withoutLabel(corev1.LabelArchStable)),
			want: ReasonPlatformMismatch, unresolvable: true, mention: "unknown"},
		{name: "other runtime", pod: testPod("p", migratingFrom("src")), node: testNode("cand-7", withLabel(v1.LabelRuntime, "containerd")),
			want: ReasonRuntimeMismatch, unresolvable: true, mention: "node runs containerd, the checkpoint was taken by cri-o"},
		{name: "runtime not compared without source", pod: testPod("p"), node: testNode("cand-7", withLabel(v1.LabelRuntime, "containerd"))},
		{name: "arch not compared without source", pod: testPod("p"), node: testNode("cand-7", withLabel(corev1.LabelArchStable, "arm64"))},
		{name: "unknown source node skips comparisons", pod: testPod("p", migratingFrom("deleted-node")),
			node: testNode("cand-7", withLabel(corev1.LabelArchStable, "arm64"), withKernel("4.19.0"))},

		{name: "older kernel minor", pod: testPod("p", migratingFrom("src")), node: testNode("cand-7", withKernel("5.15.0-1049-gke")),
			want: ReasonKernelTooOld, unresolvable: true, mention: "kernel 5.15 is older than the source node's 6.1"},
		{name: "older kernel same major", pod: testPod("p", migratingFrom("src")), node: testNode("cand-7", withKernel("6.0.9")),
			want: ReasonKernelTooOld, unresolvable: true},
		{name: "same major.minor other patch", pod: testPod("p", migratingFrom("src")), node: testNode("cand-7", withKernel("6.1.99-custom"))},
		{name: "newer kernel", pod: testPod("p", migratingFrom("src")), node: testNode("cand-7", withKernel("6.8.0-1015-gcp"))},
		{name: "newer major older minor", pod: testPod("p", migratingFrom("src")), node: testNode("cand-7", withKernel("7.0.0"))},
		{name: "unreadable kernel", pod: testPod("p", migratingFrom("src")), node: testNode("cand-7", withKernel("unknown")),
			want: ReasonKernelTooOld, unresolvable: true, mention: "kernel unknown"},

		{name: "volume pinned elsewhere", pod: testPod("p", withClaim("state", "data")), node: testNode("node-b"),
			want: ReasonVolumeNodeAffinity, unresolvable: true, mention: "pv-local"},
		{name: "volume pinned here", pod: testPod("p", withClaim("state", "data")), node: testNode("node-a")},
		{name: "unknown claim left to the scheduler", pod: testPod("p", withClaim("state", "nope")), node: testNode("node-b")},

		{name: "not ready", pod: testPod("p"), node: testNode("cand-7", notReady()), want: ReasonNodeNotReady},
		{name: "cordoned", pod: testPod("p"), node: testNode("cand-7", cordoned()), want: ReasonNodeUnschedulable, mention: "cordoned"},
		{name: "NoSchedule taint", pod: testPod("p"), node: testNode("cand-7", withTaint("dedicated", "gpu", corev1.TaintEffectNoSchedule)),
			want: ReasonUntoleratedTaint, mention: "dedicated=gpu:NoSchedule"},
		{name: "NoExecute taint", pod: testPod("p"), node: testNode("cand-7", withTaint("maintenance", "", corev1.TaintEffectNoExecute)),
			want: ReasonUntoleratedTaint, mention: "maintenance:NoExecute"},
		{name: "PreferNoSchedule taint ignored", pod: testPod("p"), node: testNode("cand-7", withTaint("x", "y", corev1.TaintEffectPreferNoSchedule))},
		{name: "tolerated taint", pod: testPod("p", tolerating(corev1.Toleration{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "gpu", Effect: corev1.TaintEffectNoSchedule})),
			node: testNode("cand-7", withTaint("dedicated", "gpu", corev1.TaintEffectNoSchedule))},
		{name: "toleration for other value", pod: testPod("p", tolerating(corev1.Toleration{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "db"})),
			node: testNode("cand-7", withTaint("dedicated", "gpu", corev1.TaintEffectNoSchedule)), want: ReasonUntoleratedTaint},
		{name: "tolerate everything", pod: testPod("p", tolerating(corev1.Toleration{Operator: corev1.TolerationOpExists})),
			node: testNode("cand-7", withTaint("a", "b", corev1.TaintEffectNoExecute))},

		{name: "unresolvable reported before resolvable", pod: testPod("p"),
			node: testNode("cand-7", notReady(), withoutLabel(v1.LabelCheckpointRestore)), want: ReasonCheckpointRestoreUnsupported, unresolvable: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := NewCacheFrom(testNode("src"), pv, pvc, tc.node)
			p := NewPodInfo(tc.pod, st)
			n, _ := st.Node(tc.node.Name)
			v, ok := DefaultChecks().Evaluate(p, n.NodeInfo)
			if tc.want == "" {
				if !ok {
					t.Fatalf("node refused: %s", v)
				}
				return
			}
			if ok {
				t.Fatalf("node accepted; want %s", tc.want)
			}
			if v.Reason != tc.want || v.Unresolvable != tc.unresolvable {
				t.Errorf("verdict %s (unresolvable %v); want %s (unresolvable %v)", v, v.Unresolvable, tc.want, tc.unresolvable)
			}
			if !strings.Contains(v.String(), tc.mention) || !strings.HasPrefix(v.String(), "ms2m "+tc.want+": ") {
				t.Errorf("message %q does not say %q", v.String(), tc.mention)
			}
			if strings.Contains(v.Message, tc.node.Name) && tc.node.Name != "src" && tc.node.Name != "node-b" {
				t.Errorf("message names the node, so the scheduler cannot count it with others: %q", v.Message)
			}
		})
	}
}

func TestParseKernel(t *testing.T) {
	for release, want := range map[string]string{
		"6.1.0-18-cloud-amd64": "6.1", "5.15.0-1049-gke": "5.15", "6.8.0": "6.8", "4.19": "4.19",
		"": "unknown", "6": "unknown", "x.1": "unknown", "6.x": "unknown", "99999999999.1": "unknown",
	} {
		if got := parseKernel(release).String(); got != want {
			t.Errorf("parseKernel(%q) = %s; want %s", release, got, want)
		}
	}
}

func TestNormalizeImage(t *testing.T) {
	for ref, want := range map[string]string{
		"nginx":                            "docker.io/library/nginx:latest",
		"nginx:1.25":                       "docker.io/library/nginx:1.25",
		"example/consumer:1":               "docker.io/example/consumer:1",
		"ghcr.io/ms2m/ms2m":                "ghcr.io/ms2m/ms2m:latest",
		"localhost:5000/cp@sha256:abc":     "localhost:5000/cp@sha256:abc",
		"registry:5000/team/cp:checkpoint": "registry:5000/team/cp:checkpoint",
	} {
		if got := normalizeImage(ref); got != want {
			t.Errorf("normalizeImage(%q) = %q; want %q", ref, got, want)
		}
	}
}

func TestCacheFollowsPodsAndMigrations(t *testing.T) {
	c := NewCacheFrom(testNode("n"),
		testPod("a", boundTo("n"), withRequests("1", "1Gi")),
		testPod("b", boundTo("n"), withRequests("500m", "512Mi")),
		testPod("done", boundTo("n"), withRequests("2", "2Gi"), inPhase(corev1.PodSucceeded)),
		testPod("pending", withRequests("2", "2Gi")),
		migration("m1", "n", v1.PhaseRestoring),
		migration("m2", "n", v1.PhasePending),
		migration("m3", "n", v1.PhaseCompleted),
		migration("m4", "other", v1.PhaseReplaying),
	)
	n, _ := c.Node("n")
	if want := (Resources{MilliCPU: 1500, Memory: 1536 << 20}); n.Requested != want {
		t.Errorf("requested = %+v; want %+v (bound, non-terminated pods only)", n.Requested, want)
	}
	if n.Inbound != 2 {
		t.Errorf("in flight to n = %d; want 2 (Completed does not count)", n.Inbound)
	}
	if got := c.MigrationTarget(client.ObjectKey{Namespace: "default", Name: "m4"}); got != "other" {
		t.Errorf("target of m4 = %q; want other", got)
	}
	if got := c.MigrationTarget(client.ObjectKey{Namespace: "default", Name: "m3"}); got != "" {
		t.Errorf("a completed migration has target %q; want none", got)
	}

	// Updates move and release resources; deletes forget.
	c.upsert(testPod("a", boundTo("n"), withRequests("1", "1Gi"), inPhase(corev1.PodFailed)))
	c.remove(testPod("b"))
	c.upsert(migration("m1", "n", v1.PhaseFailed))
	c.remove(migration("m2", "", ""))
	if n, _ = c.Node("n"); n.Requested != (Resources{}) || n.Inbound != 0 {
		t.Errorf("load after the pods and migrations left = %+v, %d; want none", n.Requested, n.Inbound)
	}
	c.remove(testNode("n"))
	c.remove(migration("m4", "", ""))
	if _, ok := c.Node("n"); ok {
		t.Error("deleted node still known")
	}
	if len(c.index) != 0 {
		t.Errorf("the cache keeps %d entries for nothing", len(c.index))
	}
}

func TestCacheImageSetsFollowNodes(t *testing.T) {
	img := normalizeImage("example/consumer:1")
	c := NewCacheFrom(testNode("a", withImages(img)), testNode("b"))
	a, _ := c.Node("a")
	b, _ := c.Node("b")
	if set := c.NodesWithImage(img); !set.Has(a.NodeInfo) || set.Has(b.NodeInfo) {
		t.Fatal("image set does not say that a, and only a, holds the image")
	}
	// The image moves from a to b; a is deleted and its slot reused by c.
	c.upsert(testNode("a"))
	c.upsert(testNode("b", withImages(img)))
	c.remove(testNode("a"))
	c.upsert(testNode("c"))
	b, _ = c.Node("b")
	cc, _ := c.Node("c")
	if set := c.NodesWithImage(img); !set.Has(b.NodeInfo) || set.Has(cc.NodeInfo) {
		t.Fatal("image set did not follow the updates")
	}
	c.upsert(testNode("b"))
	if _, ok := c.images[img]; ok {
		t.Error("an image no node holds is still indexed")
	}
}
