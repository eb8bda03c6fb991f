package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/ms2m/ms2m/internal/example/deploy"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/manager"
)

var ordered = []v1.Phase{v1.PhasePending, v1.PhaseCheckpointing, v1.PhaseTransferring, v1.PhaseRestoring,
	v1.PhaseReplaying, v1.PhaseFinalizing, v1.PhaseCompleted, v1.PhaseFailed}

// ManagerRestartSpec: the manager is restarted while migrations are in
// flight, and each restart's phase is asserted. First two migrations are
// held where they stand, so the restart lands exactly there: one in
// Pending (waiting for capacity, --max-parallel-migrations=1) and one in
// Replaying (its handover held by a PodDisruptionBudget). Then one restart
// in each short phase (Checkpointing … Finalizing), asserted to land in
// that phase or a later one still in flight. Every migration completes,
// and across all of them no message is lost or processed twice live.
//
// The sandbox runs the manager inside the test process, so this is not a
// SIGKILL: Sandbox.RestartManager cancels the manager's context (requests
// of reconciles in flight fail with "context canceled", mid-step) and
// waits for those reconciles to return before starting it again.
func ManagerRestartSpec(in SpecInput) features.Feature {
	return feature("migrations survive a manager restart in any phase", "restart in Pending and Replaying (held), then in each short phase; all complete; zero loss", func(ctx context.Context, t *testing.T) {
		in.Cluster.sandboxOnly(t, "restarts the manager")
		s := in.open(t, "restart")
		defaultParallel := func(o *manager.Options) { o.MaxParallelMigrations = manager.DefaultOptions().MaxParallelMigrations }
		t.Cleanup(func() { _ = s.Sandbox.ReconfigureManager(context.Background(), defaultParallel) })
		s.reconfigureManager(ctx, func(o *manager.Options) { o.MaxParallelMigrations = 1 })
		held, _ := s.migrationHeldByBudget(ctx, "held", 20)
		// A second consumer, bare, whose migration waits for capacity.
		pay := *s
		pay.Example.Name, pay.Example.Topic, pay.Example.Bare = "payments", s.NS+"-payments", true
		queued := pay.migrate(ctx, "queued", pay.deploy(ctx, 0).Pod.Name, v1.StatefulMigrationSpec{})
		s.EventuallyIn(t, s.NS, "migration queued waiting for capacity", func(ctx context.Context) error {
			return inPhase(ctx, s.CR, queued, v1.PhasePending, v1.ReasonWaitingForCapacity)
		})
		s.restartManager(ctx)
		for m, want := range map[*v1.StatefulMigration]v1.Phase{held: v1.PhaseReplaying, queued: v1.PhasePending} {
			if err := inPhase(ctx, s.CR, m, want, ""); err != nil {
				t.Fatalf("after the restart, migration %s: %v; want it still %s", m.Name, err, want)
			}
			t.Logf("manager restarted with migration %s in %s: it stays there", m.Name, want)
		}
		s.allowDisruptions(ctx)
		s.completed(held)
		s.completed(queued)
		s.reconfigureManager(ctx, defaultParallel)

		// Each migration moves the previous one's target: a pod that
		// carries an earlier migration's pin to its node.
		for i, at := range []v1.Phase{v1.PhaseCheckpointing, v1.PhaseTransferring, v1.PhaseRestoring, v1.PhaseFinalizing} {
			cur, err := deploy.FindConsumer(ctx, s.Client, s.NS, s.Example)
			if err != nil {
				t.Fatal(err)
			}
			m := s.migrate(ctx, fmt.Sprintf("restart-%d", i), cur.Pod.Name, v1.StatefulMigrationSpec{})
			landed := waitPhase(t, s.CR, m, at)
			if landed.IsTerminal() {
				t.Fatalf("migration %s was already %s when the restart for %s began: nothing in flight", m.Name, landed, at)
			}
			s.restartManager(ctx)
			got := s.completed(m)
			t.Logf("manager restarted in %s (aimed at %s): migration completed, downtime %s", landed, at, got.Status.Downtime.Duration)
		}
		pay.verifyZeroLoss(ctx)
		s.verifyZeroLoss(ctx)
	})
}

func (s *Spec) restartManager(ctx context.Context) {
	s.t.Helper()
	if err := s.Sandbox.RestartManager(ctx); err != nil {
		s.t.Fatal(err)
	}
}

// reconfigureManager restarts the sandbox's manager with change applied.
func (s *Spec) reconfigureManager(ctx context.Context, change func(*manager.Options)) {
	s.t.Helper()
	if err := s.Sandbox.ReconfigureManager(ctx, change); err != nil {
		s.t.Fatal(err)
	}
}

// inPhase returns nil when m is in phase want and, unless reason is
// empty, its Ready condition has that reason.
func inPhase(ctx context.Context, cl client.Client, m *v1.StatefulMigration, want v1.Phase, reason string) error {
	got := &v1.StatefulMigration{}
	if err := cl.Get(ctx, client.ObjectKeyFromObject(m), got); err != nil {
		return err
	}
	cond := meta.FindStatusCondition(got.Status.Conditions, v1.ConditionReady)
	if got.Status.Phase != want || (reason != "" && (cond == nil || cond.Reason != reason)) {
		return fmt.Errorf("phase %q, Ready %+v", got.Status.Phase, cond)
	}
	return nil
}

// waitPhase polls fast until m is in phase at or a later one, and returns
// the phase seen.
func waitPhase(t *testing.T, cl client.Client, m *v1.StatefulMigration, at v1.Phase) v1.Phase {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		got := &v1.StatefulMigration{}
		if err := cl.Get(context.Background(), client.ObjectKeyFromObject(m), got); err == nil &&
			slices.Index(ordered, got.Status.Phase) >= slices.Index(ordered, at) {
			return got.Status.Phase
		}
		time.Sleep(5 * time.Millisecond) // polling interval: phases last tens of milliseconds
	}
	t.Fatalf("migration %s never reached %s", m.Name, at)
	return ""
}
