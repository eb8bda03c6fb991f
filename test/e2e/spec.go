package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/ms2m/ms2m/examples/statefulapp"
	"github.com/ms2m/ms2m/internal/example/deploy"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// Load is the steady producer a spec runs the example under.
type Load struct {
	Rate  float64
	Count int64
}

// SpecInput configures the specs that run the example workload: the
// cluster and the producer's load.
type SpecInput struct {
	Cluster *Cluster
	Load    Load
}

// Spec is the opening most specs share: a namespace of their own on the
// cluster, the example consumer "orders" fed by its own topic under the
// input's load (not deployed yet), and a client for StatefulMigrations.
// It belongs to one Assess step: its t is that step's.
type Spec struct {
	*Cluster
	t       *testing.T
	NS      string
	Example deploy.Example
	CR      client.Client
}

// open starts a spec named name (its namespace's prefix); change adjusts
// the example before anything is deployed.
func (in SpecInput) open(t *testing.T, name string, change ...func(*deploy.Example)) *Spec {
	t.Helper()
	c := in.Cluster
	ns := c.Namespace(t, name)
	e := deploy.Example{Name: "orders", Brokers: c.Brokers, Topic: ns + "-orders", Rate: in.Load.Rate, Count: in.Load.Count,
		ProcessTime: 2 * time.Millisecond}
	for _, f := range change {
		f(&e)
	}
	return &Spec{Cluster: c, t: t, NS: ns, Example: e, CR: c.CRClient(t)}
}

// deployConsumer deploys the spec's example consumer and returns it Ready.
func (s *Spec) deployConsumer(ctx context.Context) deploy.Deployed {
	s.t.Helper()
	return deployConsumer(ctx, s.t, s.Cluster, s.NS, s.Example)
}

// deploy deploys the consumer, starts its producer and waits until the
// consumer has applied applied messages.
func (s *Spec) deploy(ctx context.Context, applied int64) deploy.Deployed {
	s.t.Helper()
	d := s.deployConsumer(ctx)
	s.startProducer(ctx)
	if err := deploy.WaitApplied(ctx, d, applied); err != nil {
		s.t.Fatal(err)
	}
	return d
}

func (s *Spec) startProducer(ctx context.Context) {
	s.t.Helper()
	if err := deploy.StartProducer(ctx, s.Client, s.NS, s.Example, s.t.Logf); err != nil {
		s.t.Fatal(err)
	}
}

// deployConsumer deploys the example consumer e into ns and returns it
// Ready (its first replica, when it has several).
func deployConsumer(ctx context.Context, tb testing.TB, c *Cluster, ns string, e deploy.Example) deploy.Deployed {
	tb.Helper()
	return deployConsumers(ctx, tb, c, ns, e)[0]
}

// deployConsumers is deployConsumer returning every replica, by name, once
// the consumer group has given each its partitions.
func deployConsumers(ctx context.Context, tb testing.TB, c *Cluster, ns string, e deploy.Example) []deploy.Deployed {
	tb.Helper()
	ds, err := deploy.DeployConsumers(ctx, c.Client, ns, e, tb.Logf)
	if err != nil {
		tb.Fatal(err)
	}
	return ds
}

// migrate creates StatefulMigration name of pod with spec (SourcePod set
// from pod).
func (s *Spec) migrate(ctx context.Context, name, pod string, spec v1.StatefulMigrationSpec) *v1.StatefulMigration {
	s.t.Helper()
	spec.SourcePod = pod
	m := &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.NS}, Spec: spec}
	if err := s.CR.Create(ctx, m); err != nil {
		s.t.Fatalf("creating migration %s: %v", name, err)
	}
	return m
}

// migrationHeldByBudget deploys the example (until applied messages are
// processed) behind a PodDisruptionBudget "orders" that allows no
// disruption of its one pod, starts migration name of it, and waits until
// the budget holds the handover: the migration replays, the source serves.
func (s *Spec) migrationHeldByBudget(ctx context.Context, name string, applied int64) (*v1.StatefulMigration, deploy.Deployed) {
	s.t.Helper()
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "orders"}, Spec: policyv1.PodDisruptionBudgetSpec{
		MinAvailable: ptr.To(intstr.FromInt32(1)), Selector: &metav1.LabelSelector{MatchLabels: s.Example.Labels()}}}
	if _, err := s.Client.PolicyV1().PodDisruptionBudgets(s.NS).Create(ctx, pdb, metav1.CreateOptions{}); err != nil {
		s.t.Fatal(err)
	}
	d := s.deploy(ctx, applied)
	m := s.migrate(ctx, name, d.Pod.Name, v1.StatefulMigrationSpec{})
	s.EventuallyIn(s.t, s.NS, "the handover held by the budget", func(ctx context.Context) error {
		if err := s.CR.Get(ctx, client.ObjectKeyFromObject(m), m); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(m.Status.Conditions, v1.ConditionReplayCaughtUp)
		if m.Status.Phase != v1.PhaseReplaying || cond == nil || cond.Reason != v1.ReasonDisruptionBudget || !strings.Contains(cond.Message, "PodDisruptionBudget orders") {
			return fmt.Errorf("phase %s, condition %+v", m.Status.Phase, cond)
		}
		return nil
	})
	return m, d
}

// allowDisruptions relaxes the budget of migrationHeldByBudget.
func (s *Spec) allowDisruptions(ctx context.Context) {
	s.t.Helper()
	patch := []byte(`{"spec":{"minAvailable":0}}`)
	if _, err := s.Client.PolicyV1().PodDisruptionBudgets(s.NS).Patch(ctx, "orders", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		s.t.Fatal(err)
	}
}

// finished waits for m to reach Completed or Failed.
func (s *Spec) finished(m *v1.StatefulMigration) *v1.StatefulMigration {
	s.t.Helper()
	return waitFinished(s.t, s.Cluster, s.CR, m)
}

// completed waits for m to finish and fails the spec, describing the
// namespace, unless it Completed.
func (s *Spec) completed(m *v1.StatefulMigration) *v1.StatefulMigration {
	s.t.Helper()
	got := s.finished(m)
	if got.Status.Phase != v1.PhaseCompleted {
		s.t.Log(s.Describe(s.NS))
		s.t.Fatalf("migration %s %s: %s", m.Name, got.Status.Phase, got.Status.FailureReason)
	}
	return got
}

// rolledBack waits for m to finish and fails the spec unless it Failed and
// was rolled back with reason (any, when empty), a failure message
// containing failure, and the source serving again.
func (s *Spec) rolledBack(m *v1.StatefulMigration, reason, failure string) *v1.StatefulMigration {
	s.t.Helper()
	got := s.finished(m)
	rolled := meta.FindStatusCondition(got.Status.Conditions, v1.ConditionRolledBack)
	if got.Status.Phase != v1.PhaseFailed || rolled == nil || (reason != "" && rolled.Reason != reason) ||
		!strings.Contains(got.Status.FailureReason, failure) || rolled.Message != "the source serves again" {
		s.t.Log(s.Describe(s.NS))
		s.t.Fatalf("migration %s: phase %s, reason %q, rolled back %+v; want Failed, %q, rolled back %s", m.Name,
			got.Status.Phase, got.Status.FailureReason, rolled, failure, reason)
	}
	s.t.Logf("migration %s failed as it should: %s; %s", m.Name, got.Status.FailureReason, rolled.Message)
	return got
}

// verifyZeroLoss is verifyZeroLoss for the spec's example.
func (s *Spec) verifyZeroLoss(ctx context.Context) deploy.Deployed {
	s.t.Helper()
	return verifyZeroLoss(ctx, s.t, s.Cluster, s.NS, s.Example)
}

// sourceServedOn checks zero loss and that the consumer serving now is src
// itself: a failed migration left the source serving.
func (s *Spec) sourceServedOn(ctx context.Context, src *corev1.Pod) {
	s.t.Helper()
	if after := s.verifyZeroLoss(ctx); after.Pod.UID != src.UID {
		s.t.Fatalf("the consumer is %s, want the source %s serving on", after.Pod.Name, src.Name)
	}
}

// verifyZeroLoss waits for e's producer to finish and checks, on the
// consumer serving now (returned; its first replica when it has several),
// that every one of the e.Count messages was processed live exactly once
// and the state is the fold of the input (each replica's, of its
// partitions).
func verifyZeroLoss(ctx context.Context, tb testing.TB, c *Cluster, ns string, e deploy.Example) deploy.Deployed {
	tb.Helper()
	after, _ := verifyReplicasZeroLoss(ctx, tb, c, ns, e)
	return after[0]
}

// verifyReplicasZeroLoss is verifyZeroLoss returning every replica, by
// name, and the verdict.
func verifyReplicasZeroLoss(ctx context.Context, tb testing.TB, c *Cluster, ns string, e deploy.Example) ([]deploy.Deployed, statefulapp.Verdict) {
	tb.Helper()
	if err := deploy.WaitProducer(ctx, c.Client, ns, e); err != nil {
		tb.Fatal(err)
	}
	after, err := deploy.FindConsumers(ctx, c.Client, ns, e)
	if err != nil {
		tb.Fatal(err)
	}
	v, err := deploy.VerifyReplicas(ctx, e, after, time.Minute)
	if err != nil {
		tb.Fatal(err)
	}
	if !v.OK() || v.Input != int(e.Count) {
		tb.Fatalf("%s: %s (want %d input messages)", e.Name, v, e.Count)
	}
	tb.Logf("%s: %s", e.Name, v)
	return after, v
}

// waitFinished waits for a migration to reach Completed or Failed.
func waitFinished(t *testing.T, c *Cluster, cl client.Client, m *v1.StatefulMigration) *v1.StatefulMigration {
	t.Helper()
	got := &v1.StatefulMigration{}
	c.EventuallyIn(t, m.Namespace, "migration "+m.Name+" finished", func(ctx context.Context) error {
		if err := cl.Get(ctx, client.ObjectKeyFromObject(m), got); err != nil {
			return err
		}
		if !got.Status.Phase.IsTerminal() {
			return fmt.Errorf("phase %q, conditions %+v, annotations %v", got.Status.Phase, got.Status.Conditions, got.Annotations)
		}
		return nil
	})
	return got
}

// waitPodGone waits until pod name in ns is deleted (not found).
func waitPodGone(t *testing.T, c *Cluster, ns, name, what string) {
	t.Helper()
	c.Eventually(t, what, func(ctx context.Context) error {
		_, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("pod %s still exists (%v)", name, err)
	})
}

// feature is a spec of one step: name, what the step asserts, and the
// step (most specs are one, and none reads e2e-framework's config).
func feature(name, assess string, step func(ctx context.Context, t *testing.T)) features.Feature {
	return features.New(name).Assess(assess, func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
		step(ctx, t)
		return ctx
	}).Feature()
}
