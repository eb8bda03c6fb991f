package e2e

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/ms2m/ms2m/internal/example/deploy"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// BadInputSpec: every migration that cannot be done fails with a reason
// naming what is wrong, and the source is left untouched and serving.
func BadInputSpec(in SpecInput) features.Feature {
	return feature("migrations that cannot be done fail clearly and touch nothing", "each bad request fails with its reason; the source keeps serving", func(ctx context.Context, t *testing.T) {
		s := in.open(t, "badinput")
		c, ns := s.Cluster, s.NS
		d := s.deployConsumer(ctx)
		plain := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "plain", Labels: map[string]string{"app": "plain"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{ConsumerContainer()}}}
		if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, plain, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		assertServing(ctx, t, c, ns, "app=plain", 1)
		nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// The cordoned target is one the pod could otherwise go to: a
		// checkpoint restores only in the runtime that wrote it.
		var cordoned, cannotRestore, runtime string
		for _, n := range nodes.Items {
			if n.Name == d.Pod.Spec.NodeName {
				runtime = n.Labels[v1.LabelRuntime]
			}
		}
		for _, n := range nodes.Items {
			switch {
			case n.Labels[v1.LabelCheckpointRestore] != "true" && cannotRestore == "":
				cannotRestore = n.Name
			case n.Name != d.Pod.Spec.NodeName && n.Labels[v1.LabelRuntime] == runtime && cordoned == "":
				cordoned = n.Name
			}
		}
		if cordoned == "" {
			t.Fatalf("needs another node that restores as %s, as the source's %s does", runtime, d.Pod.Spec.NodeName)
		}
		if out, err := c.Kubectl(ctx, "cordon", cordoned); err != nil {
			t.Fatalf("cordon: %v %s", err, out)
		}
		t.Cleanup(func() { _, _ = c.Kubectl(context.Background(), "uncordon", cordoned) })

		cases := []struct {
			name   string
			spec   v1.StatefulMigrationSpec
			reason string
		}{
			{"pod does not exist", v1.StatefulMigrationSpec{SourcePod: "no-such-pod"}, v1.ReasonSourcePodNotFound},
			{"pod not migratable", v1.StatefulMigrationSpec{SourcePod: "plain"}, v1.ReasonSourceNotMigratable},
			{"target is the source node", v1.StatefulMigrationSpec{SourcePod: d.Pod.Name, TargetNode: d.Pod.Spec.NodeName}, v1.ReasonTargetIsSource},
			{"unknown target node", v1.StatefulMigrationSpec{SourcePod: d.Pod.Name, TargetNode: "no-such-node"}, v1.ReasonTargetNodeNotFound},
			{"cordoned target node", v1.StatefulMigrationSpec{SourcePod: d.Pod.Name, TargetNode: cordoned}, v1.ReasonTargetUnschedulable},
			{"unreachable brokers", v1.StatefulMigrationSpec{SourcePod: d.Pod.Name,
				MessageQueueConfig: &v1.MessageQueueConfig{Brokers: []v1.BrokerAddress{"127.0.0.1:1"}}}, v1.ReasonBrokerUnreachable},
		}
		if cannotRestore != "" {
			cases = append(cases, struct {
				name   string
				spec   v1.StatefulMigrationSpec
				reason string
			}{"target cannot restore checkpoints", v1.StatefulMigrationSpec{SourcePod: d.Pod.Name, TargetNode: cannotRestore}, v1.ReasonTargetCannotRestore})
		}
		for i, tc := range cases {
			got := s.finished(s.migrate(ctx, fmt.Sprintf("bad-%d", i), tc.spec.SourcePod, tc.spec))
			cond := meta.FindStatusCondition(got.Status.Conditions, v1.ConditionReady)
			if got.Status.Phase != v1.PhaseFailed || cond == nil || cond.Reason != tc.reason || got.Status.FailureReason == "" {
				t.Errorf("%s: phase %s, reason %v, message %q; want Failed with %s", tc.name, got.Status.Phase, cond, got.Status.FailureReason, tc.reason)
			} else {
				t.Logf("%s: %s: %s", tc.name, cond.Reason, got.Status.FailureReason)
			}
		}
		// The source was never touched.
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, d.Pod.Name, metav1.GetOptions{})
		if err != nil || p.UID != d.Pod.UID || !IsReady(p) {
			t.Fatalf("source after the refused migrations: %v ready=%v", err, err == nil && IsReady(p))
		}
	})
}

// RollbackSpec: under a steady producer, a migration whose image push
// fails rolls back, a migration deleted mid-way is cancelled and rolled
// back, two migrations of the same pod make one refuse, and a final
// migration completes; across all of it no message is lost or processed
// twice live and the state is exact.
func RollbackSpec(in SpecInput) features.Feature {
	return feature("failed and cancelled migrations roll back with nothing lost", "push failure, cancellation, a duplicate request, then success: zero loss", func(ctx context.Context, t *testing.T) {
		s := in.open(t, "rollback")
		source := s.deploy(ctx, in.Load.Count/6).Pod.Name

		// 1. The agent cannot push: rolled back, the source serves.
		bad := s.migrate(ctx, "push-fails", source, v1.StatefulMigrationSpec{CheckpointImageRepository: "127.0.0.1:1/nowhere"})
		s.assertNoTarget(s.rolledBack(bad, v1.ReasonPushFailed, ""))

		// 2. Deleted mid-way: cancelled, rolled back, gone.
		cancel := s.migrate(ctx, "cancelled", source, v1.StatefulMigrationSpec{})
		var phase v1.Phase
		s.Eventually(t, "the migration past its checkpoint", func(ctx context.Context) error {
			if err := s.CR.Get(ctx, client.ObjectKeyFromObject(cancel), cancel); err != nil {
				return err
			}
			phase = cancel.Status.Phase
			switch phase {
			case v1.PhaseTransferring, v1.PhaseRestoring, v1.PhaseReplaying, v1.PhaseFinalizing, v1.PhaseCompleted:
				return nil
			}
			return fmt.Errorf("phase %q", phase)
		})
		if err := s.CR.Delete(ctx, cancel); err != nil {
			t.Fatal(err)
		}
		s.Eventually(t, "the cancelled migration gone", func(ctx context.Context) error {
			err := s.CR.Get(ctx, client.ObjectKeyFromObject(cancel), &v1.StatefulMigration{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there (%v)", err)
		})
		t.Logf("deleted the migration in phase %s", phase)

		// 3. Two migrations of the consumer at once: one refuses.
		cur, err := deploy.FindConsumer(ctx, s.Client, s.NS, s.Example)
		if err != nil {
			t.Fatal(err)
		}
		first := s.migrate(ctx, "first", cur.Pod.Name, v1.StatefulMigrationSpec{})
		second := s.migrate(ctx, "second", cur.Pod.Name, v1.StatefulMigrationSpec{})
		s.completed(first)
		b := s.finished(second)
		if cond := meta.FindStatusCondition(b.Status.Conditions, v1.ConditionReady); b.Status.Phase != v1.PhaseFailed || cond == nil || cond.Reason != v1.ReasonAlreadyMigrating {
			t.Fatalf("second migration of the same pod: %s %v", b.Status.Phase, cond)
		}
		t.Logf("second migration refused: %s", b.Status.FailureReason)
		s.verifyZeroLoss(ctx)
	})
}

// assertNoTarget: a rolled-back migration left no target pod.
func (s *Spec) assertNoTarget(m *v1.StatefulMigration) {
	s.t.Helper()
	s.Eventually(s.t, "no target pod of "+m.Name, func(ctx context.Context) error {
		pods, err := s.Client.CoreV1().Pods(s.NS).List(ctx, metav1.ListOptions{LabelSelector: v1.LabelMigration + "=" + m.Name})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil {
				return fmt.Errorf("target pod %s still there", p.Name)
			}
		}
		return nil
	})
}
