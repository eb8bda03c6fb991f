package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/ms2m/ms2m/internal/example/deploy"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// RollbackInput configures RollbackSpec.
type RollbackInput struct {
	Cluster *Cluster
	Rate    float64
	Count   int64
}

// RollbackSpec: under a steady producer, a migration whose image push
// fails rolls back, a migration deleted mid-way is cancelled and rolled
// back, two migrations of the same pod make one refuse, and a final
// migration completes; across all of it no message is lost or processed
// twice live and the state is exact.
func RollbackSpec(in RollbackInput) features.Feature {
	return features.New("failed and cancelled migrations roll back with nothing lost").
		Assess("push failure, cancellation, a duplicate request, then success: zero loss", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			c := in.Cluster
			if len(c.Brokers) == 0 {
				t.Skip("no Kafka broker for this cluster (set E2E_BROKERS)")
			}
			ns := c.Namespace(t, "rollback")
			e := deploy.Example{Name: "orders", Brokers: c.Brokers, Topic: ns + "-orders", Rate: in.Rate, Count: in.Count, ProcessTime: 2 * time.Millisecond}
			d := deployExample(ctx, t, c, ns, e, in.Count/6)
			cl := c.CRClient(t)
			source := d.Pod.Name

			// 1. The agent cannot push: rolled back, the source serves.
			bad := &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: "push-fails", Namespace: ns},
				Spec: v1.StatefulMigrationSpec{SourcePod: source, CheckpointImageRepository: "127.0.0.1:1/nowhere"}}
			if err := cl.Create(ctx, bad); err != nil {
				t.Fatal(err)
			}
			got := waitFinished(t, c, cl, bad)
			if cond := meta.FindStatusCondition(got.Status.Conditions, v1.ConditionRolledBack); got.Status.Phase != v1.PhaseFailed ||
				cond == nil || cond.Reason != v1.ReasonPushFailed {
				t.Fatalf("push failure: phase %s, rolled back %v, %q", got.Status.Phase, cond, got.Status.FailureReason)
			}
			t.Logf("push failure rolled back: %s", got.Status.FailureReason)
			assertNoTarget(ctx, t, c, ns, got)

			// 2. Deleted mid-way: cancelled, rolled back, gone.
			cancel := &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: "cancelled", Namespace: ns}, Spec: v1.StatefulMigrationSpec{SourcePod: source}}
			if err := cl.Create(ctx, cancel); err != nil {
				t.Fatal(err)
			}
			var phase v1.Phase
			c.Eventually(t, "the migration past its checkpoint", func(ctx context.Context) error {
				if err := cl.Get(ctx, client.ObjectKeyFromObject(cancel), cancel); err != nil {
					return err
				}
				phase = cancel.Status.Phase
				switch phase {
				case v1.PhaseTransferring, v1.PhaseRestoring, v1.PhaseReplaying, v1.PhaseFinalizing, v1.PhaseCompleted:
					return nil
				}
				return fmt.Errorf("phase %q", phase)
			})
			if err := cl.Delete(ctx, cancel); err != nil {
				t.Fatal(err)
			}
			c.Eventually(t, "the cancelled migration gone", func(ctx context.Context) error {
				err := cl.Get(ctx, client.ObjectKeyFromObject(cancel), &v1.StatefulMigration{})
				if apierrors.IsNotFound(err) {
					return nil
				}
				return fmt.Errorf("still there (%v)", err)
			})
			t.Logf("deleted the migration in phase %s", phase)

			// 3. Two migrations of the consumer at once: one refuses.
			cur, err := deploy.FindConsumer(ctx, c.Client, ns, e)
			if err != nil {
				t.Fatal(err)
			}
			first := &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: "first", Namespace: ns}, Spec: v1.StatefulMigrationSpec{SourcePod: cur.Pod.Name}}
			second := &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: "second", Namespace: ns}, Spec: v1.StatefulMigrationSpec{SourcePod: cur.Pod.Name}}
			if err := cl.Create(ctx, first); err != nil {
				t.Fatal(err)
			}
			if err := cl.Create(ctx, second); err != nil {
				t.Fatal(err)
			}
			a, b := waitFinished(t, c, cl, first), waitFinished(t, c, cl, second)
			if a.Status.Phase != v1.PhaseCompleted {
				t.Fatalf("first migration %s: %s", a.Status.Phase, a.Status.FailureReason)
			}
			if cond := meta.FindStatusCondition(b.Status.Conditions, v1.ConditionReady); b.Status.Phase != v1.PhaseFailed || cond == nil || cond.Reason != v1.ReasonAlreadyMigrating {
				t.Fatalf("second migration of the same pod: %s %v", b.Status.Phase, cond)
			}
			t.Logf("second migration refused: %s", b.Status.FailureReason)

			verifyZeroLoss(ctx, t, c, ns, e)
			return ctx
		}).Feature()
}

// assertNoTarget: a rolled-back migration left no target pod.
func assertNoTarget(ctx context.Context, t *testing.T, c *Cluster, ns string, m *v1.StatefulMigration) {
	t.Helper()
	c.Eventually(t, "no target pod of "+m.Name, func(ctx context.Context) error {
		pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: v1.LabelMigration + "=" + m.Name})
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
