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

// ManagerRestartSpec: the manager is SIGKILLed while migrations are in
// flight (the sandbox runs it as a child process for this spec), and the
// phase each one was left in is asserted. First two migrations are held
// where they stand, so the kill lands exactly there: one in Pending
// (waiting for capacity, --max-parallel-migrations=1) and one in Replaying
// (its handover held by a PodDisruptionBudget); both must still be there
// once a new manager runs. Then one kill in each short phase
// (Checkpointing … Finalizing), asserted to land in that phase or a later
// one still in flight. Every migration completes, and across all of them
// no message is lost or processed twice live. Killing in the instant
// between the source's pause and the offsets' status write cannot be
// aimed at from here; the controller suite kills there
// (TestRestartAtEveryStep).
func ManagerRestartSpec(in SpecInput) features.Feature {
	return feature("migrations survive a manager SIGKILLed in any phase", "kill in Pending and Replaying (held), then in each short phase; each stays where it was; all complete; zero loss", func(ctx context.Context, t *testing.T) {
		in.Cluster.sandboxOnly(t, "kills the manager")
		s := in.open(t, "restart")
		defaultParallel := func(o *manager.Options) { o.MaxParallelMigrations = manager.DefaultOptions().MaxParallelMigrations }
		t.Cleanup(func() {
			_ = s.Sandbox.ReconfigureManager(context.Background(), defaultParallel)
			_ = s.Sandbox.ManagerAsProcess(context.Background(), false)
		})
		if err := s.Sandbox.ManagerAsProcess(ctx, true); err != nil {
			t.Fatal(err)
		}
		s.reconfigureManager(ctx, func(o *manager.Options) { o.MaxParallelMigrations = 1 })
		held, _ := s.migrationHeldByBudget(ctx, "held", 20)
		// A second consumer, bare, whose migration waits for capacity.
		pay := *s
		pay.Example.Name, pay.Example.Topic, pay.Example.Bare = "payments", s.NS+"-payments", true
		queued := pay.migrate(ctx, "queued", pay.deploy(ctx, 0).Pod.Name, v1.StatefulMigrationSpec{})
		s.EventuallyIn(t, s.NS, "migration queued waiting for capacity", func(ctx context.Context) error {
			return inPhase(ctx, s.CR, queued, v1.PhasePending, v1.ReasonWaitingForCapacity)
		})
		stays := map[*v1.StatefulMigration]v1.Phase{held: v1.PhaseReplaying, queued: v1.PhasePending}
		s.killManager()
		for m, want := range stays {
			if err := inPhase(ctx, s.CR, m, want, ""); err != nil {
				t.Fatalf("manager killed, migration %s: %v; want %s", m.Name, err, want)
			}
		}
		s.startManager(ctx)
		for m, want := range stays {
			if err := inPhase(ctx, s.CR, m, want, ""); err != nil {
				t.Fatalf("after the kill, migration %s: %v; want it still %s", m.Name, err, want)
			}
			t.Logf("manager killed with migration %s in %s: it stays there", m.Name, want)
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
			waitPhase(t, s.CR, m, at)
			s.killManager()
			landed := phaseOf(ctx, t, s.CR, m)
			if landed.IsTerminal() || slices.Index(ordered, landed) < slices.Index(ordered, at) {
				t.Fatalf("migration %s was %s when the manager died (aimed at %s): want %s or a later phase still in flight", m.Name, landed, at, at)
			}
			s.startManager(ctx)
			got := s.completed(m)
			t.Logf("manager killed in %s (aimed at %s): migration completed, downtime %s", landed, at, got.Status.Downtime.Duration)
		}
		pay.verifyZeroLoss(ctx)
		s.verifyZeroLoss(ctx)
	})
}

func (s *Spec) killManager() {
	s.t.Helper()
	if err := s.Sandbox.KillManager(); err != nil {
		s.t.Fatal(err)
	}
}

func (s *Spec) startManager(ctx context.Context) {
	s.t.Helper()
	if err := s.Sandbox.StartManager(ctx); err != nil {
		s.t.Fatal(err)
	}
}

// phaseOf reads m's phase now.
func phaseOf(ctx context.Context, t *testing.T, cl client.Client, m *v1.StatefulMigration) v1.Phase {
	t.Helper()
	got := &v1.StatefulMigration{}
	if err := cl.Get(ctx, client.ObjectKeyFromObject(m), got); err != nil {
		t.Fatal(err)
	}
	return got.Status.Phase
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
