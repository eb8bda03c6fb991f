package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/ms2m/ms2m/internal/example/deploy"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/evacuation"
)

// DrainMigratableSpec: the real `kubectl drain` of a node running two
// migratable example consumers under load (a Deployment's pod and a bare
// pod) and one ordinary pod exits 0; each consumer was moved by one
// evacuation migration, Completed, and runs on another node with nothing
// lost or processed twice live; the ordinary pod was evicted.
func DrainMigratableSpec(in SpecInput) features.Feature {
	return feature("kubectl drain moves migratable pods live", "drain exits 0; consumers moved with zero loss; ordinary pod evicted", func(ctx context.Context, t *testing.T) {
		s := in.open(t, "evacuate")
		c, ns := s.Cluster, s.NS
		da := s.deployConsumer(ctx)
		drained := da.Pod.Spec.NodeName
		t.Cleanup(func() { _, _ = c.Kubectl(context.Background(), "uncordon", drained) })
		// Producers run elsewhere: one evicted by the drain would start
		// over and send its messages twice.
		s.Example.ProducerNode = c.otherNode(ctx, t, drained)
		a := s.Example
		// A second consumer, bare, on the drained node.
		pay := *s
		pay.Example.Name, pay.Example.Topic, pay.Example.Bare, pay.Example.Node = "payments", ns+"-payments", true, drained
		b := pay.Example
		db := pay.deploy(ctx, 0)
		s.startProducer(ctx)
		ordinary := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "ordinary", Labels: map[string]string{"app": "ordinary"}}, Spec: podTemplate("ordinary").Spec}
		ordinary.Spec.NodeName = drained
		if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, ordinary, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		assertServing(ctx, t, c, ns, "app=ordinary", 1)
		for _, d := range []deploy.Deployed{da, db} {
			if err := deploy.WaitApplied(ctx, d, in.Load.Count/4); err != nil {
				t.Fatal(err)
			}
		}

		start := time.Now()
		out, err := c.Kubectl(ctx, "drain", drained, "--ignore-daemonsets", "--force", "--delete-emptydir-data", "--timeout=180s")
		if err != nil {
			t.Log(c.Describe(ns))
			t.Fatalf("kubectl drain %s: %v\n%s", drained, err, out)
		}
		t.Logf("kubectl drain %s exited 0 after %s:\n%s", drained, time.Since(start).Round(time.Millisecond), out)

		cl := s.CR
		for _, d := range []deploy.Deployed{da, db} {
			m := &v1.StatefulMigration{}
			if err := cl.Get(ctx, client.ObjectKey{Namespace: ns, Name: evacuation.MigrationName(d.Pod)}, m); err != nil {
				t.Fatalf("the evacuation migration of %s: %v", d.Pod.Name, err)
			}
			if m.Status.Phase != v1.PhaseCompleted || m.Labels[v1.LabelTrigger] != evacuation.Trigger || m.Status.SourceNode != drained {
				t.Fatalf("migration %s: phase %s (%s), trigger %q, source node %s", m.Name, m.Status.Phase, m.Status.FailureReason, m.Labels[v1.LabelTrigger], m.Status.SourceNode)
			}
			t.Logf("%s moved by %s to %s, downtime %s", d.Pod.Name, m.Name, m.Status.TargetNode, m.Status.Downtime.Duration)
		}
		var all v1.StatefulMigrationList
		if err := cl.List(ctx, &all, client.InNamespace(ns)); err != nil || len(all.Items) != 2 {
			t.Fatalf("want exactly 2 migrations in %s (one per migratable pod), got %d (%v)", ns, len(all.Items), err)
		}
		if _, err := c.Client.CoreV1().Pods(ns).Get(ctx, "ordinary", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("the ordinary pod was not evicted: %v", err)
		}
		for _, e := range []deploy.Example{a, b} {
			after := verifyZeroLoss(ctx, t, c, ns, e)
			if after.Pod.Spec.NodeName == drained {
				t.Fatalf("%s still runs on the drained node %s", after.Pod.Name, drained)
			}
		}
	})
}

// DrainWithoutTargetSpec: draining the node of a migratable consumer when
// no other node can restore a checkpoint: the drain keeps being refused
// with the migration's failure and what to do, and times out; the
// consumer keeps serving on its node throughout. Once a target exists and
// the failed migration is deleted (the documented retry), the same drain
// completes; nothing is lost across both.
func DrainWithoutTargetSpec(in SpecInput) features.Feature {
	return feature("kubectl drain with no restore-capable target", "drain is refused with the reason, the pod keeps serving; after the retry it moves, zero loss", func(ctx context.Context, t *testing.T) {
		in.Cluster.sandboxOnly(t, "cordons every other node of the cluster")
		s := in.open(t, "notarget")
		c, ns := s.Cluster, s.NS
		d := s.deployConsumer(ctx)
		drained := d.Pod.Spec.NodeName
		nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var cordoned []string
		for _, n := range nodes.Items {
			switch {
			case n.Name == drained:
			case n.Labels[v1.LabelCheckpointRestore] == "true":
				cordoned = append(cordoned, n.Name)
			default:
				s.Example.ProducerNode = n.Name
			}
		}
		if s.Example.ProducerNode == "" || len(cordoned) == 0 {
			t.Fatalf("needs a node that cannot restore and another that can (nodes: %d)", len(nodes.Items))
		}
		uncordon := func() {
			for _, n := range append(cordoned, drained) {
				_, _ = c.Kubectl(context.Background(), "uncordon", n)
			}
		}
		t.Cleanup(uncordon)
		if out, err := c.Kubectl(ctx, append([]string{"cordon"}, cordoned...)...); err != nil {
			t.Fatalf("cordon: %v %s", err, out)
		}
		s.startProducer(ctx)
		if err := deploy.WaitApplied(ctx, d, in.Load.Count/4); err != nil {
			t.Fatal(err)
		}

		out, err := c.Kubectl(ctx, "drain", drained, "--ignore-daemonsets", "--timeout=20s")
		name := evacuation.MigrationName(d.Pod)
		if err == nil {
			t.Fatalf("kubectl drain succeeded with no node to restore on:\n%s", out)
		}
		for _, want := range []string{"failed: no node can take the pod", "cannot restore checkpoints", "delete StatefulMigration " + name} {
			if !strings.Contains(out, want) {
				t.Fatalf("kubectl drain output does not say %q:\n%s", want, out)
			}
		}
		t.Logf("kubectl drain refused as expected:\n%s", out)
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, d.Pod.Name, metav1.GetOptions{})
		if err != nil || p.UID != d.Pod.UID || !IsReady(p) || p.Spec.NodeName != drained {
			t.Fatalf("the consumer did not keep serving on %s: %v", drained, err)
		}

		// The retry: a target exists again, the failed migration is deleted.
		uncordon()
		if out, err := c.Kubectl(ctx, "--namespace", ns, "delete", "statefulmigration", name); err != nil {
			t.Fatalf("deleting the failed migration: %v %s", err, out)
		}
		out, err = c.Kubectl(ctx, "drain", drained, "--ignore-daemonsets", "--timeout=120s")
		if err != nil {
			t.Log(c.Describe(ns))
			t.Fatalf("kubectl drain after the retry: %v\n%s", err, out)
		}
		if after := s.verifyZeroLoss(ctx); after.Pod.Spec.NodeName == drained {
			t.Fatalf("%s still runs on the drained node", after.Pod.Name)
		}
	})
}

// DisruptionBudgetSpec: a migration never takes a workload below its
// PodDisruptionBudget. With minAvailable equal to the replicas the handover
// waits (the source keeps serving, the condition says which budget); once
// the budget allows one disruption the migration completes, zero loss.
func DisruptionBudgetSpec(in SpecInput) features.Feature {
	return feature("migration respects PodDisruptionBudgets", "handover waits for the budget, then completes with zero loss", func(ctx context.Context, t *testing.T) {
		s := in.open(t, "pdb")
		m, d := s.migrationHeldByBudget(ctx, "held", in.Load.Count/4)
		p, err := s.Client.CoreV1().Pods(s.NS).Get(ctx, d.Pod.Name, metav1.GetOptions{})
		if err != nil || !IsReady(p) {
			t.Fatalf("the source stopped serving while the budget held the handover: %v", err)
		}
		s.allowDisruptions(ctx)
		s.completed(m)
		s.verifyZeroLoss(ctx)
	})
}
