package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/ms2m/ms2m/internal/example/deploy"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/evacuation"
)

// DrainTwoOfThreeSpec: three replicas of the example consumer (one
// Deployment) share one consumer group on a topic of six partitions, two of
// them on one node. The real `kubectl drain` of that node under load exits
// 0 and moves both: each by one evacuation migration, Completed, to another
// node; no migration for the third. Nothing is lost or processed twice
// live, each replica's state is the fold of its own partitions, no
// partition's state held by two. The third replica is undisturbed: its
// group generation and partitions never change (no rebalance), no pause or
// fence reaches it, it stays live and keeps delivering while the drain
// runs.
func DrainTwoOfThreeSpec(in SpecInput) features.Feature {
	return feature("kubectl drain of a node holding two of three replicas", "drain exits 0; both moved with zero loss, the third neither rebalanced nor paused", func(ctx context.Context, t *testing.T) {
		in.Cluster.sandboxOnly(t, "cordons nodes to put two replicas together (a cordon asks ms2m to evacuate a node)")
		s := in.open(t, "drain3", func(e *deploy.Example) { e.Replicas, e.Partitions = 3, 6 })
		c, ns := s.Cluster, s.NS
		drained, moved, stay := deployTwoTogether(ctx, t, s)
		// The producer runs elsewhere: one evicted by the drain would start
		// over and send its messages twice.
		s.Example.ProducerNode = c.otherNode(ctx, t, drained)
		s.startProducer(ctx)
		ds := append(slices.Clone(moved), stay...)
		if err := deploy.WaitAppliedTotal(ctx, ds, in.Load.Count/3); err != nil {
			t.Fatal(err)
		}
		before := readSidecars(ctx, t, stay)

		w := watchSidecars(stay)
		start := time.Now()
		out, err := c.Kubectl(ctx, "drain", drained, "--ignore-daemonsets", "--force", "--delete-emptydir-data", "--timeout=180s")
		samples, werr := w.stop()
		if err != nil {
			t.Log(c.Describe(ns))
			t.Fatalf("kubectl drain %s: %v\n%s", drained, err, out)
		}
		t.Logf("kubectl drain %s exited 0 after %s:\n%s", drained, time.Since(start).Round(time.Millisecond), out)
		if werr != nil {
			t.Fatalf("reading the staying replicas' sidecars during the drain: %v", werr)
		}

		assertEvacuated(ctx, t, s, drained, moved)
		after, v := verifyReplicasZeroLoss(ctx, t, c, ns, s.Example)
		for _, a := range after {
			if a.Pod.Spec.NodeName == drained {
				t.Fatalf("replica %s still runs on the drained node %s", a.Pod.Name, drained)
			}
			if slices.ContainsFunc(moved, func(m deploy.Deployed) bool { return m.Pod.UID == a.Pod.UID }) {
				t.Fatalf("replica %s of the drained node is still a consumer", a.Pod.Name)
			}
		}
		for _, st := range stay {
			if !slices.ContainsFunc(after, func(a deploy.Deployed) bool { return a.Pod.UID == st.Pod.UID }) {
				t.Fatalf("replica %s, not on the drained node, was replaced: consumers now %v", st.Pod.Name, names(after))
			}
		}
		assertPartitionsApart(t, v, 6)
		end := readSidecars(ctx, t, stay)
		for i, st := range stay {
			assertUndisturbed(t, st.Pod.Name, before[i], samples[i], end[i])
		}
	})
}

// deployTwoTogether deploys the spec's consumer while all but two of the
// nodes that can restore checkpoints are cordoned, so its three replicas
// share two nodes, then uncordons them: the drained node is the one holding
// at least two replicas (moved), the others stay. Every node touched is
// uncordoned when the test ends.
func deployTwoTogether(ctx context.Context, t *testing.T, s *Spec) (drained string, moved, stay []deploy.Deployed) {
	t.Helper()
	c := s.Cluster
	restore := c.restoreNodes(t)
	if len(restore) < 3 {
		t.Fatalf("needs three nodes that can restore checkpoints (one to hold two replicas, two to take them), have %v", restore)
	}
	cordoned := restore[2:]
	t.Cleanup(func() {
		for _, n := range restore {
			_, _ = c.Kubectl(context.Background(), "uncordon", n)
		}
	})
	if out, err := c.Kubectl(ctx, append([]string{"cordon"}, cordoned...)...); err != nil {
		t.Fatalf("cordon %v: %v %s", cordoned, err, out)
	}
	ds := deployConsumers(ctx, t, c, s.NS, s.Example)
	if out, err := c.Kubectl(ctx, append([]string{"uncordon"}, cordoned...)...); err != nil {
		t.Fatalf("uncordon %v: %v %s", cordoned, err, out)
	}
	on := map[string][]deploy.Deployed{}
	for _, d := range ds {
		on[d.Pod.Spec.NodeName] = append(on[d.Pod.Spec.NodeName], d)
	}
	for n, here := range on {
		if len(here) > len(moved) {
			drained, moved = n, here
		}
	}
	if len(moved) < 2 {
		t.Fatalf("replicas %v spread over %d nodes with %v cordoned; want two on one node", names(ds), len(on), cordoned)
	}
	for _, d := range ds {
		if d.Pod.Spec.NodeName != drained {
			stay = append(stay, d)
		}
	}
	if len(stay) == 0 {
		// The scheduler's choice; the drain must still move all three.
		t.Logf("the scheduler put all three replicas on %s: none stays to check undisturbed", drained)
	}
	t.Logf("draining %s, holding %v; staying: %v", drained, names(moved), names(stay))
	return drained, moved, stay
}

// assertEvacuated: each replica that ran on the drained node was moved by
// its one evacuation migration, Completed, to another node, and there is
// no other migration in the namespace.
func assertEvacuated(ctx context.Context, t *testing.T, s *Spec, drained string, moved []deploy.Deployed) {
	t.Helper()
	for _, d := range moved {
		m := &v1.StatefulMigration{}
		if err := s.CR.Get(ctx, client.ObjectKey{Namespace: s.NS, Name: evacuation.MigrationName(d.Pod)}, m); err != nil {
			t.Fatalf("the evacuation migration of %s: %v", d.Pod.Name, err)
		}
		m = s.completed(m)
		if m.Labels[v1.LabelTrigger] != evacuation.Trigger || m.Status.SourceNode != drained || m.Status.TargetNode == drained {
			t.Fatalf("migration %s: trigger %q, from %s to %s; want an evacuation from %s elsewhere", m.Name, m.Labels[v1.LabelTrigger],
				m.Status.SourceNode, m.Status.TargetNode, drained)
		}
		t.Logf("%s moved by %s to %s, downtime %s", d.Pod.Name, m.Name, m.Status.TargetNode, m.Status.Downtime.Duration)
	}
	var all v1.StatefulMigrationList
	if err := s.CR.List(ctx, &all, client.InNamespace(s.NS)); err != nil {
		t.Fatal(err)
	}
	if len(all.Items) != len(moved) {
		var got []string
		for _, m := range all.Items {
			got = append(got, m.Name+" of "+m.Spec.SourcePod)
		}
		t.Fatalf("migrations in %s: %v; want exactly one per replica of the drained node %v", s.NS, got, names(moved))
	}
}
