package migration

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/internal/migrationtest"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// staleMigrations answers List of StatefulMigrations from a snapshot: a
// cache that has not seen the latest status writes yet, as when two
// workers admit migrations at the same moment.
type staleMigrations struct {
	client.Client
	snapshot *v1.StatefulMigrationList
}

func (c staleMigrations) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if l, ok := list.(*v1.StatefulMigrationList); ok && len(opts) == 0 { // the cluster-wide count, not a lookup by index
		c.snapshot.DeepCopyInto(l)
		return nil
	}
	return c.Client.List(ctx, list, opts...)
}

// secondSource creates another running migratable pod on the world's
// source node.
func (w *world) secondSource(name string) {
	w.t.Helper()
	ctx := context.Background()
	pod := migrationtest.SourcePod(w.ns, name, w.sourceNode, broker)
	must(w.t, api.Create(ctx, pod))
	must(w.t, migrationtest.ReportRunning(ctx, api, pod))
}

func heldBecause(flag string) func(*v1.StatefulMigration) bool {
	return func(m *v1.StatefulMigration) bool {
		c := condition(m, v1.ConditionReady)
		return m.Status.Phase != "" && m.Status.Phase != v1.PhasePending || c != nil && c.Reason == v1.ReasonWaitingForCapacity && strings.Contains(c.Message, flag)
	}
}

// Workers admit migrations side by side from one cache: a migration the
// cache does not show running yet still takes its slot, so the last slot
// goes to one migration, not to every worker that read the cache.
func TestTheLastSlotGoesToOneMigration(t *testing.T) {
	w := newWorld(t, func(_ *world, o *Options) { o.MaxParallel = 1 })
	w.noCheckpoint = true
	w.secondSource("other")
	first := w.migrate("first")
	second := w.migrate("second", func(m *v1.StatefulMigration) { m.Spec.SourcePod = "other" })
	snapshot := &v1.StatefulMigrationList{}
	for _, m := range []*v1.StatefulMigration{first, second} {
		snapshot.Items = append(snapshot.Items, *w.get(m))
	}
	w.r.Client = staleMigrations{Client: w.r.Client, snapshot: snapshot}

	w.until(first, "Checkpointing", inPhase(v1.PhaseCheckpointing))
	got := w.until(second, "held", heldBecause("--max-parallel-migrations=1"))
	if got.Status.Phase != v1.PhasePending {
		t.Fatalf("the second migration went on to %s (%s) while the first held the only slot (--max-parallel-migrations=1)", got.Status.Phase, got.Status.FailureReason)
	}
}

// One namespace cannot take every slot: past its limit its migrations
// wait, another namespace's go on.
func TestNamespaceLimitLeavesSlotsForOthers(t *testing.T) {
	opts := func(w *world, o *Options) { o.MaxParallel, o.MaxParallelPerNamespace, w.noCheckpoint = 3, 1, true }
	tenant := newWorld(t, opts)
	tenant.secondSource("other")
	tenant.until(tenant.migrate("first"), "Checkpointing", inPhase(v1.PhaseCheckpointing))
	got := tenant.until(tenant.migrate("second", func(m *v1.StatefulMigration) { m.Spec.SourcePod = "other" }), "held",
		heldBecause("--max-parallel-migrations-per-namespace=1"))
	if got.Status.Phase != v1.PhasePending || !strings.Contains(condition(got, v1.ConditionReady).Message, tenant.ns) {
		t.Fatalf("the tenant's second migration: %s, %+v; want held, naming namespace %s", got.Status.Phase, condition(got, v1.ConditionReady), tenant.ns)
	}
	neighbour := newWorld(t, opts)
	neighbour.until(neighbour.migrate("first"), "Checkpointing", inPhase(v1.PhaseCheckpointing))
}

// A PodDisruptionBudget that never allows a disruption holds the handover
// for --disruption-budget-timeout, then fails the migration with a reason
// naming the budget; the source was never fenced and serves on.
func TestDisruptionBudgetWaitIsBounded(t *testing.T) {
	w := newWorld(t, func(_ *world, o *Options) { o.DisruptionBudgetTimeout = 30 * time.Second })
	ctx := context.Background()
	w.budgetAllowingNothing("all-of-them")

	m := w.until(w.migrate("budget"), "held by the budget", func(m *v1.StatefulMigration) bool {
		c := condition(m, v1.ConditionReplayCaughtUp)
		return c != nil && c.Reason == v1.ReasonDisruptionBudget
	})
	w.clock.Step(29 * time.Second)
	if _, err := w.reconcile(m); err != nil {
		t.Fatal(err)
	}
	if got := w.get(m); got.Status.Phase != v1.PhaseReplaying {
		t.Fatalf("29 s into a 30 s wait: %s, want still Replaying", got.Status.Phase)
	}
	w.clock.Step(2 * time.Second)
	got := w.until(m, "Failed", inPhase(v1.PhaseFailed))
	if c := condition(got, v1.ConditionReady); c == nil || c.Reason != v1.ReasonDisruptionBudgetTimedOut || !strings.Contains(got.Status.FailureReason, "all-of-them") {
		t.Fatalf("failed with %+v, %q; want %s naming the budget", c, got.Status.FailureReason, v1.ReasonDisruptionBudgetTimedOut)
	}
	if w.sidecars.Count("Fence") != 0 {
		t.Fatal("the source was fenced although the budget never allowed the handover")
	}
	src := &corev1.Pod{}
	must(t, api.Get(ctx, client.ObjectKey{Namespace: w.ns, Name: w.source}, src))
	if src.DeletionTimestamp != nil {
		t.Fatal("the source is being deleted after a failed migration")
	}
}
