package migration

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	kwait "k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/internal/expect"
	"github.com/ms2m/ms2m/internal/migrationtest"
	"github.com/ms2m/ms2m/internal/testenv"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migratable"
	"github.com/ms2m/ms2m/scheduler"
)

func phasesOf(m *v1.StatefulMigration) []v1.Phase {
	var out []v1.Phase
	for _, t := range m.Status.PhaseTransitions {
		out = append(out, t.Phase)
	}
	return out
}

// A bare pod is migrated through the ShadowPod table's phases in order:
// the target takes the source's identity at the fence, the source goes,
// and every phase change is announced.
func TestShadowPodMigratesThroughEveryPhase(t *testing.T) {
	w := newWorld(t)
	m := w.until(w.migrate("move"), "Completed", inPhase(v1.PhaseCompleted))

	want := []v1.Phase{v1.PhasePending, v1.PhaseCheckpointing, v1.PhaseTransferring, v1.PhaseRestoring, v1.PhaseReplaying, v1.PhaseFinalizing, v1.PhaseCompleted}
	if got := phasesOf(m); !slices.Equal(got, want) {
		t.Fatalf("phases %v, want %v", got, want)
	}
	target := w.pod(m.Status.TargetPod)
	if target == nil || target.Spec.NodeName != w.targetNode || target.Labels["app"] != w.source {
		t.Fatalf("target %+v: want it on %s with the source's labels", target, w.targetNode)
	}
	// A sidecar restarted after the handover must consume live.
	if mode := target.Annotations[v1.AnnotationSidecarMode]; mode != v1.SidecarModeLive {
		t.Fatalf("target's sidecar mode %q; want %q", mode, v1.SidecarModeLive)
	}
	if w.pod(w.source) != nil {
		t.Fatal("the source pod is still there")
	}
	if m.Status.CheckpointImage != migrationtest.FakeImage || len(m.Status.CheckpointOffsets) != 2 || m.Status.Downtime == nil {
		t.Fatalf("status: image %q, offsets %v, downtime %v", m.Status.CheckpointImage, m.Status.CheckpointOffsets, m.Status.Downtime)
	}
	// Where the target said it went live is recorded next to F.
	if len(m.Status.TargetLiveOffsets) == 0 || !equality.Semantic.DeepEqual(m.Status.TargetLiveOffsets, m.Status.FenceOffsets) {
		t.Fatalf("target live offsets %v, fence %v: want the target's report, equal to the fence", m.Status.TargetLiveOffsets, m.Status.FenceOffsets)
	}
	if calls := w.sidecars.Calls(); slices.Index(calls, "Pause") > slices.Index(calls, "Resume") || slices.Index(calls, "Fence") > slices.Index(calls, "Handover") {
		t.Fatalf("sidecar calls out of order: %v", calls)
	}
	events := w.recorded()
	for _, p := range want[1:] {
		if !hasEvent(events, "Normal "+string(p)+" ") {
			t.Errorf("no %s Event in %v", p, events)
		}
	}
}

// The downtime is what the sidecars measured, both stalls added up: the
// source's checkpoint pause and the handover from the source's fence to
// the target live, each by the sidecars' own clocks (far from the
// controller's here, as another node's may be); the status, the metrics,
// the HandedOver condition and Event all say the sum and the split.
func TestDowntimeIsTheSumOfTheSidecarsStalls(t *testing.T) {
	w := newWorld(t)
	reg := prometheus.NewRegistry()
	w.r.Metrics = NewMetrics(reg)
	pause, handover := 21300*time.Microsecond, 4800*time.Microsecond
	w.sidecars.SetStalls(pause, handover)
	m := w.until(w.migrate("stalls"), "Completed", inPhase(v1.PhaseCompleted))

	st := m.Status.Stalls
	if st == nil || st.CheckpointPause == nil || st.Handover == nil || st.CheckpointPause.Duration != pause || st.Handover.Duration != handover || st.Measured != v1.StallsBySidecars {
		t.Fatalf("stalls %+v; want checkpoint pause %s and handover %s, measured by the sidecars", st, pause, handover)
	}
	if m.Status.Downtime == nil || m.Status.Downtime.Duration != pause+handover {
		t.Fatalf("downtime %v; want the sum %s", m.Status.Downtime, pause+handover)
	}
	split := "downtime 26.1ms (checkpoint pause 21.3ms + handover 4.8ms)"
	if c := condition(m, v1.ConditionHandedOver); c == nil || !strings.Contains(c.Message, split) {
		t.Fatalf("HandedOver condition %+v; want it to say %q", c, split)
	}
	if !hasEvent(w.recorded(), "Normal HandedOver target "+m.Status.TargetPod+" live at the fence; "+split) {
		t.Fatalf("no HandedOver Event saying %q", split)
	}
	// And where the handover went: both calls (made in one reconcile) by
	// the controller's clock, the target's part by its own.
	if c := condition(m, v1.ConditionHandedOver); !strings.Contains(c.Message, "; the handover: fence call ") ||
		!strings.Contains(c.Message, "handover call ") || !strings.Contains(c.Message, "(target 3 messages behind the fence: replayed in 2.4ms, joined in 1.2ms)") {
		t.Fatalf("HandedOver condition %q; want it to say where the handover went", c.Message)
	}
	for name, want := range map[string]float64{
		"ms2m_migration_downtime_seconds": (pause + handover).Seconds(), "ms2m_migration_checkpoint_pause_seconds": pause.Seconds(),
		"ms2m_migration_handover_stall_seconds": handover.Seconds(),
	} {
		if got := histogramSum(t, reg, name); math.Abs(got-want) > 1e-9 {
			t.Errorf("%s sums %g; want %g", name, got, want)
		}
	}
}

// A sidecar that reports no times (it restarted in between) leaves the
// stalls to the controller's own measure, and the status says so.
func TestStallsWithoutTheSidecarsTimesSayWhoMeasured(t *testing.T) {
	w := newWorld(t)
	m := w.until(w.migrate("untimed"), "Completed", inPhase(v1.PhaseCompleted))
	if st := m.Status.Stalls; st == nil || st.Measured != v1.StallsByController || st.CheckpointPause == nil || st.Handover == nil {
		t.Fatalf("stalls %+v; want both, measured by the controller", st)
	}
	if c := condition(m, v1.ConditionHandedOver); c == nil || !strings.Contains(c.Message, "partly measured by the controller") {
		t.Fatalf("HandedOver condition %+v; want it to say the controller measured", c)
	}
}

func histogramSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetHistogram().GetSampleSum()
		}
	}
	t.Fatalf("no histogram %s", name)
	return 0
}

// Each phase that waits on someone else is bounded: the clock passing its
// deadline fails the migration and rolls it back, the source serving again.
func TestPhaseTimeoutsRollBack(t *testing.T) {
	cases := []struct {
		phase    v1.Phase
		withhold func(*world)
		limit    time.Duration
	}{
		{v1.PhaseCheckpointing, func(w *world) { w.noCheckpoint = true }, DefaultOptions().Timeouts.Checkpoint},
		{v1.PhaseTransferring, func(w *world) { w.noImage = true }, DefaultOptions().Timeouts.Transfer},
		{v1.PhaseRestoring, func(w *world) { w.kubeletStopped = true }, DefaultOptions().Timeouts.Restore},
		{v1.PhaseFinalizing, func(w *world) { w.sidecars.Unreachable("Handover") }, DefaultOptions().Timeouts.Finalize},
	}
	for _, tc := range cases {
		t.Run(string(tc.phase), func(t *testing.T) {
			w := newWorld(t)
			tc.withhold(w)
			m := w.until(w.migrate("slow"), string(tc.phase), inPhase(tc.phase))
			// Not a moment early.
			w.clock.Step(tc.limit - time.Second)
			_, _ = w.reconcile(m)
			if got := w.get(m); got.Status.Phase != tc.phase {
				t.Fatalf("failed before its deadline: %s %s", got.Status.Phase, got.Status.FailureReason)
			}
			// Fenced before the handover: a restarted sidecar stays out of the group.
			if mode := w.pod(w.source).Annotations[v1.AnnotationSidecarMode]; tc.phase == v1.PhaseFinalizing && mode != v1.SidecarModeFenced {
				t.Fatalf("source's sidecar mode %q while fenced; want %q", mode, v1.SidecarModeFenced)
			}
			resumes := w.sidecars.Count("Rejoin")
			w.clock.Step(2 * time.Second)
			got := w.until(m, "Failed", inPhase(v1.PhaseFailed))
			if c := condition(got, v1.ConditionReady); c == nil || c.Reason != v1.ReasonPhaseTimedOut {
				t.Fatalf("Ready condition %+v, want reason %s", c, v1.ReasonPhaseTimedOut)
			}
			want := "the source serves again"
			if tc.phase == v1.PhaseFinalizing {
				// Fenced, then resumed: the stall is counted and said.
				want += " (after 2m1s fenced; downtime 2m1s: checkpoint pause 0.0ms + handover 2m1s, partly measured by the controller)"
			}
			if c := condition(got, v1.ConditionRolledBack); c == nil || c.Message != want {
				t.Fatalf("RolledBack condition %+v; want the message %q", c, want)
			}
			if w.sidecars.Count("Rejoin") <= resumes {
				t.Fatal("the source's sidecar was not rejoined")
			}
			if mode, ok := w.pod(w.source).Annotations[v1.AnnotationSidecarMode]; ok {
				t.Fatalf("source's sidecar mode %q after the rollback; want none (a restart must rejoin the group)", mode)
			}
			if got.Status.TargetPod != "" && w.pod(got.Status.TargetPod) != nil {
				t.Fatalf("target pod %s left behind", got.Status.TargetPod)
			}
			if !hasEvent(w.recorded(), "Warning "+v1.ReasonPhaseTimedOut+" ") {
				t.Fatal("no PhaseTimedOut Warning Event")
			}
		})
	}
}

// A push the agent reports as failed rolls the migration back.
func TestPushFailureRollsBack(t *testing.T) {
	w := newWorld(t)
	w.imageError = "registry.invalid: no such host"
	got := w.until(w.migrate("push"), "Failed", inPhase(v1.PhaseFailed))
	if c := condition(got, v1.ConditionReady); c == nil || c.Reason != v1.ReasonPushFailed || !strings.Contains(got.Status.FailureReason, "no such host") {
		t.Fatalf("Ready %+v, failure %q", c, got.Status.FailureReason)
	}
	if w.pod(w.source) == nil {
		t.Fatal("the source pod is gone")
	}
}

// replayingForever holds a migration in Replaying: the target stays
// behind and nothing moves (the fake clock stands still).
func replayingForever(w *world) { w.sidecars.SetReplay(10, 1000) }

// Deleting an unfinished migration rolls it back; the status saying so is
// written, and its Warning Event recorded, before the finalizer goes (and
// the object with it), so a watcher sees why it went.
func TestCancelRollsBackAndSaysSo(t *testing.T) {
	w := newWorld(t)
	replayingForever(w)
	m := w.until(w.migrate("cancel"), "Replaying", inPhase(v1.PhaseReplaying))
	target := m.Status.TargetPod
	w.recorded()
	must(t, api.Delete(context.Background(), m))
	// One reconcile, once the cache has seen the deletion as the API
	// server has it: it rolls back, writes the status and removes the
	// finalizer, and the API server removes the object at once.
	w.fresh(m, func(m *v1.StatefulMigration) bool { return m.DeletionTimestamp != nil })
	watcher, err := client.NewWithWatch(restCfg, client.Options{Scheme: api.Scheme()})
	must(t, err)
	watch, err := watcher.Watch(context.Background(), &v1.StatefulMigrationList{}, client.InNamespace(w.ns))
	must(t, err)
	defer watch.Stop()
	if _, err := w.reconcile(m); err != nil {
		t.Fatal(err)
	}
	// Whoever watches it (kubectl ms2m migrate --wait, kubectl get -w)
	// sees it Failed and rolled back before it goes.
	var seen []string
	for ev := range watch.ResultChan() {
		got, ok := ev.Object.(*v1.StatefulMigration)
		if !ok {
			continue
		}
		c := condition(got, v1.ConditionRolledBack)
		seen = append(seen, fmt.Sprintf("%s %s", ev.Type, got.Status.Phase))
		if got.Status.Phase == v1.PhaseFailed && c != nil && c.Reason == v1.ReasonCancelled {
			break
		}
		if ev.Type == "DELETED" {
			t.Fatalf("the migration went without its status saying it was cancelled and rolled back: %v", seen)
		}
	}
	if got := &(v1.StatefulMigration{}); !apierrors.IsNotFound(api.Get(context.Background(), client.ObjectKeyFromObject(m), got)) {
		t.Fatalf("the cancelled migration is still there: %s, finalizers %v", got.Status.Phase, got.Finalizers)
	}
	if !hasEvent(w.recorded(), "Warning "+v1.ReasonCancelled+" the StatefulMigration was deleted; rolled back: the source serves again") {
		t.Fatal("the rollback's Warning Event was lost")
	}
	if w.pod(target) != nil || w.pod(w.source) == nil {
		t.Fatalf("after the cancel: target %s still there or the source gone", target)
	}
}

// A PodDisruptionBudget that allows no disruption holds the handover (the
// source serves on); once it allows one, the migration takes it and
// completes.
func TestDisruptionBudgetHoldsTheHandover(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	pdb := w.budgetAllowingNothing("orders")

	m := w.until(w.migrate("budget"), "held by the budget", func(m *v1.StatefulMigration) bool {
		c := condition(m, v1.ConditionReplayCaughtUp)
		return c != nil && c.Reason == v1.ReasonDisruptionBudget
	})
	if m.Status.Phase != v1.PhaseReplaying || w.sidecars.Count("Fence") != 0 {
		t.Fatalf("held migration in %s, %d fences", m.Status.Phase, w.sidecars.Count("Fence"))
	}
	must(t, api.Get(ctx, client.ObjectKeyFromObject(pdb), pdb))
	pdb.Status.DisruptionsAllowed = 1
	must(t, api.Status().Update(ctx, pdb))
	w.until(m, "Completed", inPhase(v1.PhaseCompleted))
	must(t, api.Get(ctx, client.ObjectKeyFromObject(pdb), pdb))
	if _, taken := pdb.Status.DisruptedPods[w.source]; !taken || pdb.Status.DisruptionsAllowed != 0 {
		t.Fatalf("budget status %+v: the handover did not take its disruption", pdb.Status)
	}
}

// budgetAllowingNothing creates a PodDisruptionBudget over the source that
// allows no disruption now, as the disruption controller reports it.
func (w *world) budgetAllowingNothing(name string) *policyv1.PodDisruptionBudget {
	w.t.Helper()
	ctx := context.Background()
	pdb := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: name},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(1)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": w.source}}},
	}
	must(w.t, api.Create(ctx, pdb))
	pdb.Status = policyv1.PodDisruptionBudgetStatus{ObservedGeneration: pdb.Generation, DisruptionsAllowed: 0, CurrentHealthy: 1, DesiredHealthy: 1, ExpectedPods: 1}
	must(w.t, api.Status().Update(ctx, pdb))
	return pdb
}

// A reconcile that loses its status write to a newer version of the
// migration writes nothing, announces nothing and is requeued; the
// migration then completes with each phase announced once.
func TestConflictAnnouncesNothing(t *testing.T) {
	w := newWorld(t)
	var bumped atomic.Bool
	w.r.Client = beforeStatusWrite(cached, func(ctx context.Context, m *v1.StatefulMigration) error {
		if m.Status.Phase != v1.PhaseCheckpointing || !bumped.CompareAndSwap(false, true) {
			return nil
		}
		// Someone else writes first: the optimistic lock refuses ours.
		cur := &v1.StatefulMigration{}
		if err := api.Get(ctx, client.ObjectKeyFromObject(m), cur); err != nil {
			return err
		}
		return migrationtest.Annotate(ctx, api, cur, "example.com/touched", "yes")
	})
	m := w.migrate("conflict")
	for deadline := time.Now().Add(20 * time.Second); !bumped.Load(); {
		if time.Now().After(deadline) {
			t.Fatal("no status write within 20s")
		}
		res, err := w.reconcile(m)
		if bumped.Load() && (err != nil || !res.Requeue) {
			t.Fatalf("a lost status write: result %+v, error %v; want a requeue", res, err)
		}
	}
	if got := w.get(m); got.Status.Phase != "" {
		t.Fatalf("phase %s written despite the conflict", got.Status.Phase)
	}
	if hasEvent(w.recorded(), "Normal Checkpointing ") {
		t.Fatal("the lost transition was announced")
	}
	w.until(m, "Completed", inPhase(v1.PhaseCompleted))
	n := 0
	for _, e := range w.recorded() {
		if strings.HasPrefix(e, "Normal Checkpointing ") {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("Checkpointing announced %d times", n)
	}
}

// A manager that dies at any step, after the step's side effects but
// before its status write (a SIGKILL: nothing drains), is replaced by a new
// one that finishes the migration: every step is safe to run again. In
// Checkpointing that is the window in which the source's sidecar is paused
// but the offsets are not yet recorded.
func TestRestartAtEveryStep(t *testing.T) {
	for _, p := range shadowPod().phases {
		t.Run(string(p.name), func(t *testing.T) {
			w := newWorld(t)
			if p.name == v1.PhaseReplaying {
				replayingForever(w)
			}
			var m *v1.StatefulMigration
			switch p.name {
			case v1.PhaseFinalizing:
				m = fencedUnanswered(w, "restart")
			case v1.PhasePending:
				m = w.migrate("restart")
			default:
				m = w.until(w.migrate("restart"), string(p.name), inPhase(p.name))
			}
			pauses := w.sidecars.Count("Pause")
			// The first status write kills the manager: neither it nor any
			// later write of the dying reconcile lands.
			var crashed, dead atomic.Bool
			w.r.Client = beforeStatusWrite(cached, func(context.Context, *v1.StatefulMigration) error {
				if !crashed.Swap(true) {
					dead.Store(true)
				}
				if dead.Load() {
					return errors.New("killed")
				}
				return nil
			})
			if p.name == v1.PhaseReplaying {
				w.sidecars.SetReplay(1000, 0) // caught up: this reconcile fences
			}
			ctx := context.Background()
			for deadline := time.Now().Add(20 * time.Second); !crashed.Load(); {
				if time.Now().After(deadline) {
					t.Fatal("no status write to kill within 20s")
				}
				_, _ = w.reconcile(m)
				w.fakeAgent(ctx, w.get(m))
				w.fakeKubelet(ctx)
			}
			dead.Store(false)
			want := p.name
			if p.name == v1.PhasePending {
				want = ""
			}
			if got := w.get(m); got.Status.Phase != want {
				t.Fatalf("the killed reconcile's phase %s was written", got.Status.Phase)
			}
			if p.name == v1.PhaseCheckpointing && (w.sidecars.Count("Pause") == pauses || len(w.get(m).Status.CheckpointOffsets) != 0) {
				t.Fatal("the kill did not land between the pause and the offsets' write")
			}
			w.restart()
			got := w.until(m, "Completed", inPhase(v1.PhaseCompleted))
			if w.pod(w.source) != nil || w.pod(got.Status.TargetPod) == nil {
				t.Fatal("after the restart: the source is still there or the target is not")
			}
			var pods corev1.PodList
			must(t, api.List(context.Background(), &pods, client.InNamespace(w.ns)))
			if len(pods.Items) != 1 {
				t.Fatalf("%d pods after the migration, want the one target", len(pods.Items))
			}
			if w.sidecars.Count("Resume") == 0 {
				t.Fatal("the source's sidecar was never resumed after its pause")
			}
		})
	}
}

// --default-replay-cutoff bounds the replay of migrations that set none.
func TestDefaultReplayCutoffBoundsTheReplay(t *testing.T) {
	w := newWorld(t, func(_ *world, o *Options) { o.DefaultReplayCutoff = 10 * time.Second })
	replayingForever(w)
	m := w.until(w.migrate("cutoff"), "Replaying", inPhase(v1.PhaseReplaying))
	w.clock.Step(11 * time.Second)
	got := w.until(m, "past Replaying", func(m *v1.StatefulMigration) bool { return m.Status.Phase != v1.PhaseReplaying })
	if c := condition(got, v1.ConditionReplayCaughtUp); c == nil || c.Reason != v1.ReasonReplayCutoff {
		t.Fatalf("ReplayCaughtUp %+v, want %s after the 10s default cutoff", c, v1.ReasonReplayCutoff)
	}
	// The cutoff bounds the replay: no wait for a catch-up comes on top.
	if n := w.sidecars.Count("CaughtUp"); n != 0 {
		t.Fatalf("%d catch-up waits after the cutoff", n)
	}
}

// A target whose remaining lag fits the downtime budget is let catch up
// before the source is fenced: what it replays on the handover's stall is
// then what the source processed between the two calls, not a sample's
// worth (here 5 messages).
func TestATargetWithinTheBudgetCatchesUpBeforeTheFence(t *testing.T) {
	w := newWorld(t)
	w.sidecars.SetReplay(10, 5)
	m := w.until(w.migrate("catch-up"), "a replay sample", func(m *v1.StatefulMigration) bool { return m.Status.Replay != nil })
	w.clock.Step(time.Second)
	w.sidecars.SetReplay(1010, 5) // μ = 1000/s: 5 messages take 5 ms, within the 100 ms budget
	got := w.until(m, "Completed", inPhase(v1.PhaseCompleted))
	calls := w.sidecars.Calls()
	fence, caughtUp := slices.Index(calls, "Fence"), slices.Index(calls, "CaughtUp")
	if caughtUp < 0 || caughtUp > fence || slices.Contains(calls[caughtUp+1:fence], "Position") {
		t.Fatalf("sidecar calls %v; want the catch-up right before the fence", calls)
	}
	if c := condition(got, v1.ConditionReplayCaughtUp); c == nil || c.Reason != v1.ReasonCaughtUp {
		t.Fatalf("ReplayCaughtUp %+v", c)
	}
}

// A migration over the cluster's limit waits in Pending, saying why in its
// Ready condition; it has not failed, so it has no failure reason.
func TestHeldForCapacityIsNotAFailure(t *testing.T) {
	w := newWorld(t, func(_ *world, o *Options) { o.MaxParallel = 1 })
	w.noCheckpoint = true
	first := w.until(w.migrate("first"), "Checkpointing", inPhase(v1.PhaseCheckpointing))
	other := migrationtest.SourcePod(w.ns, "other", w.sourceNode, broker)
	must(t, api.Create(context.Background(), other))
	must(t, migrationtest.ReportRunning(context.Background(), api, other))
	second := w.migrate("second", func(m *v1.StatefulMigration) { m.Spec.SourcePod = "other" })
	got := w.until(second, "held", func(m *v1.StatefulMigration) bool {
		c := condition(m, v1.ConditionReady)
		return c != nil && c.Reason == v1.ReasonWaitingForCapacity
	})
	if got.Status.Phase != v1.PhasePending || got.Status.FailureReason != "" {
		t.Fatalf("held migration: phase %s, failure reason %q", got.Status.Phase, got.Status.FailureReason)
	}
	if !strings.Contains(condition(got, v1.ConditionReady).Message, "--max-parallel-migrations=1") {
		t.Fatalf("held without saying why: %q", condition(got, v1.ConditionReady).Message)
	}
	_ = first
}

// Every refusal the extender gives a named target node is reported with
// the API reason a user can act on, not the generic NoEligibleTargetNode.
func TestTargetReasonNamesEveryExtenderRefusal(t *testing.T) {
	want := map[string]string{
		"UnknownNode":                  v1.ReasonTargetNodeNotFound,
		"SourceNode":                   v1.ReasonTargetIsSource,
		"CheckpointRestoreUnsupported": v1.ReasonTargetCannotRestore,
		"PlatformMismatch":             v1.ReasonTargetCannotRestore,
		"KernelTooOld":                 v1.ReasonTargetCannotRestore,
		"VolumeNodeAffinity":           v1.ReasonTargetUnschedulable,
		"NodeNotReady":                 v1.ReasonTargetNodeNotReady,
		"NodeUnschedulable":            v1.ReasonTargetUnschedulable,
		"UntoleratedTaint":             v1.ReasonTargetUnschedulable,
	}
	for extender, reason := range want {
		if got := targetReason(extender); got != reason {
			t.Errorf("extender reason %s → %s, want %s", extender, got, reason)
		}
	}
}

// A named target the extender refuses because its kernel is older than
// the source's fails with TargetNodeCannotRestore, naming the node.
func TestOlderKernelTargetCannotRestore(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	n := &corev1.Node{}
	must(t, api.Get(ctx, client.ObjectKey{Name: w.targetNode}, n))
	n.Status.NodeInfo.KernelVersion = "4.19.0"
	must(t, api.Status().Update(ctx, n))
	src := &corev1.Node{}
	must(t, api.Get(ctx, client.ObjectKey{Name: w.sourceNode}, src))
	w.r.Nodes = scheduler.NewCacheFrom(src, n)
	got := w.until(w.migrate("kernel"), "Failed", inPhase(v1.PhaseFailed))
	if c := condition(got, v1.ConditionReady); c == nil || c.Reason != v1.ReasonTargetCannotRestore || !strings.Contains(got.Status.FailureReason, w.targetNode) {
		t.Fatalf("Ready %+v, failure %q: want %s naming %s", c, got.Status.FailureReason, v1.ReasonTargetCannotRestore, w.targetNode)
	}
}

// The topic the offsets are recorded for does not depend on which helper
// read the source pod first.
func TestTopicWithoutTheSourceReadFirst(t *testing.T) {
	w := newWorld(t)
	m := w.migrate("topic")
	got, err := (&work{r: w.r, m: m}).topic(context.Background())
	if err != nil || got != "orders" {
		t.Fatalf("topic %q, %v; want the source's annotation, orders", got, err)
	}
	m.Spec.MessageQueueConfig = &v1.MessageQueueConfig{Topic: "payments"}
	if got, _ := (&work{r: w.r, m: m}).topic(context.Background()); got != "payments" {
		t.Fatalf("topic %q; want the spec's, payments", got)
	}
}

// The phase tables: both strategies go through the same phases in the
// same order; only their steps differ.
func TestStrategyTables(t *testing.T) {
	names := func(s strategy) []v1.Phase {
		var out []v1.Phase
		for _, p := range s.phases {
			out = append(out, p.name)
		}
		return out
	}
	want := []v1.Phase{v1.PhasePending, v1.PhaseCheckpointing, v1.PhaseTransferring, v1.PhaseRestoring, v1.PhaseReplaying, v1.PhaseFinalizing}
	for name, s := range map[string]strategy{"ShadowPod": shadowPod(), "Sequential": sequential(), "StopAndCopy": stopAndCopy()} {
		if got := names(s); !slices.Equal(got, want) {
			t.Errorf("%s phases %v, want %v", name, got, want)
		}
	}
	if fmt.Sprint(migratable.TargetName(&v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{UID: "abcdef12"}, Spec: v1.StatefulMigrationSpec{SourcePod: "orders"}})) != "orders-ms2m-abcde" {
		t.Error("target name changed")
	}
}

// ownedByStatefulSet makes the source a StatefulSet's pod, which the FAKE
// StatefulSet controller recreates under the same name.
func ownedByStatefulSet(w *world, _ *Options) {
	p := migrationtest.SourcePod(w.ns, w.source, "", "")
	p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "orders",
		UID: "0b0e4b5c-0000-4000-8000-000000000001", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}
	p.Annotations[v1.AnnotationKafkaBrokers] = broker
	w.statefulSet = p
}

// StopAndCopy, the papers' baseline on MS2M's own path: the source is
// paused for the checkpoint and never resumed; it is fenced where it
// paused (F = O), before the image is pushed, and stays stopped until the
// target goes live at F with nothing to replay. Its downtime is the whole
// of it: the pause up to the fence, then the fence to the target live.
func TestStopAndCopyKeepsTheSourceStoppedFromItsCheckpoint(t *testing.T) {
	w := newWorld(t)
	pause, handover := 30*time.Millisecond, 250*time.Millisecond
	w.sidecars.SetStalls(pause, handover)
	m := w.until(w.migrate("stop-and-copy", func(m *v1.StatefulMigration) { m.Spec.Strategy = v1.StrategyStopAndCopy }),
		"Completed", inPhase(v1.PhaseCompleted))

	if m.Status.Strategy != v1.StrategyStopAndCopy {
		t.Fatalf("strategy %s; want StopAndCopy", m.Status.Strategy)
	}
	calls := w.sidecars.Calls()
	if slices.Contains(calls, "Resume") || slices.Contains(calls, "Rejoin") || slices.Index(calls, "Pause") > slices.Index(calls, "Fence") || slices.Index(calls, "Fence") > slices.Index(calls, "Handover") {
		t.Fatalf("sidecar calls %v: want pause, fence, handover, and the source never resumed", calls)
	}
	if len(m.Status.FenceOffsets) == 0 || !equality.Semantic.DeepEqual(m.Status.FenceOffsets, m.Status.CheckpointOffsets) {
		t.Fatalf("fence %v, checkpoint offsets %v: want the fence where the source stopped for its checkpoint", m.Status.FenceOffsets, m.Status.CheckpointOffsets)
	}
	if c := condition(m, v1.ConditionCheckpointed); c == nil || !strings.Contains(c.Message, "stays stopped until the target is live") {
		t.Fatalf("Checkpointed condition %+v; want it to say the source stays stopped", c)
	}
	st := m.Status.Stalls
	if st == nil || st.CheckpointPause == nil || st.Handover == nil || st.CheckpointPause.Duration != pause || st.Handover.Duration != handover ||
		m.Status.Downtime == nil || m.Status.Downtime.Duration != pause+handover || st.Measured != v1.StallsBySidecars {
		t.Fatalf("stalls %+v, downtime %v; want the pause %s to the fence and %s from it to the target live, by the sidecars", st, m.Status.Downtime, pause, handover)
	}
}

// A StatefulSet's pod goes through the Sequential table: fenced and
// released after the push, recreated by its StatefulSet under the same
// name and restored from the checkpoint on the target node (the webhook's
// migratable.RestoreStatefulSetPod), handed over at the fence, and left an
// ordinary pod of its StatefulSet.
func TestSequentialMigratesAStatefulSetPod(t *testing.T) {
	w := newWorld(t, ownedByStatefulSet)
	before := w.pod(w.source)
	m := w.until(w.migrate("sts"), "Completed", inPhase(v1.PhaseCompleted))

	want := []v1.Phase{v1.PhasePending, v1.PhaseCheckpointing, v1.PhaseTransferring, v1.PhaseRestoring, v1.PhaseReplaying, v1.PhaseFinalizing, v1.PhaseCompleted}
	if got := phasesOf(m); !slices.Equal(got, want) || m.Status.Strategy != v1.StrategySequential {
		t.Fatalf("strategy %s, phases %v; want Sequential through %v", m.Status.Strategy, got, want)
	}
	p := w.pod(w.source)
	if p == nil || p.UID == before.UID || p.Spec.NodeName != w.targetNode || m.Status.TargetPod != w.source {
		t.Fatalf("restored pod %+v: want a new %s on %s", p, w.source, w.targetNode)
	}
	if p.Spec.Containers[0].Image != migrationtest.FakeImage || p.Labels[v1.LabelMigration] != "" {
		t.Fatalf("restored pod: image %s, migration label %q; want the checkpoint image and no label", p.Spec.Containers[0].Image, p.Labels[v1.LabelMigration])
	}
	if calls := w.sidecars.Calls(); slices.Index(calls, "Fence") > slices.Index(calls, "Handover") || slices.Contains(calls, "Position") && slices.Index(calls, "Position") < slices.Index(calls, "Fence") {
		t.Fatalf("sidecar calls %v: want the fence before the restore and the handover", calls)
	}
	if m.Status.Downtime == nil || len(m.Status.FenceOffsets) != 2 {
		t.Fatalf("downtime %v, fence %v", m.Status.Downtime, m.Status.FenceOffsets)
	}
}

// A StatefulSet that recreates the released pod without the checkpoint
// (the webhook was down) fails the migration saying so: the pod starts
// with empty state, and no rollback can bring the released source back.
func TestSequentialWithoutTheRestoreFails(t *testing.T) {
	w := newWorld(t, ownedByStatefulSet, func(w *world, _ *Options) { w.webhookDown = true })
	got := w.until(w.migrate("sts"), "Failed", inPhase(v1.PhaseFailed))
	if c := condition(got, v1.ConditionReady); c == nil || c.Reason != v1.ReasonRestoreFailed || !strings.Contains(got.Status.FailureReason, "without the checkpoint") {
		t.Fatalf("Ready %+v, failure %q", c, got.Status.FailureReason)
	}
	if c := condition(got, v1.ConditionRolledBack); c == nil || !strings.Contains(c.Message, "the source was already released") {
		t.Fatalf("RolledBack %+v: want it to say the source was already released", c)
	}
}

// The pod webhook fails closed, so while no manager answers it the API
// server refuses the target pod. That is no reason to roll back: the
// creation is tried again within Restoring's timeout, and the migration
// completes once the webhook answers.
func TestTargetRefusedWhileThePodWebhookIsDownIsRetried(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	down := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: w.ns + "-down"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "pods.ms2m.io",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: ptr.To("https://" + testenv.FreeAddr(t) + "/mutate-v1-pod")},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: w.ns}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
	// Down after Pending, whose dry run of the target would otherwise
	// wait for it there (TestATargetTheAPIServerWouldRefuseFailsBeforeThePause).
	m := w.until(w.migrate("down"), "Transferring", inPhase(v1.PhaseTransferring))
	must(t, api.Create(ctx, down))
	t.Cleanup(func() { _ = api.Delete(context.Background(), down) })
	m = w.until(m, "Restoring", inPhase(v1.PhaseRestoring))
	var refused error
	_ = kwait.PollUntilContextTimeout(ctx, 5*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
		_, refused = w.reconcile(m)
		return refused != nil || w.get(m).Status.Phase.IsTerminal(), nil
	})
	if refused == nil {
		got := w.get(m)
		t.Fatalf("no target creation was refused by the webhook: phase %s %s", got.Status.Phase, got.Status.FailureReason)
	}
	if !strings.Contains(refused.Error(), "pods.ms2m.io") {
		t.Fatalf("reconcile error %v; want the webhook's refusal", refused)
	}
	if got := w.get(m); got.Status.Phase != v1.PhaseRestoring {
		t.Fatalf("after the webhook refused the target: phase %s (%s); want it still Restoring", got.Status.Phase, got.Status.FailureReason)
	}

	must(t, api.Delete(ctx, down))
	ended := func(m *v1.StatefulMigration) bool { return m != nil && m.Status.Phase.IsTerminal() }
	if got := w.until(m, "ended", ended); got.Status.Phase != v1.PhaseCompleted {
		t.Fatalf("once the webhook answers: phase %s (%s); want Completed", got.Status.Phase, got.Status.FailureReason)
	}
}

// A target pod the API server would refuse (here an admission policy that
// refuses host-network targets, as the chart's refuses the manager pods
// beyond Pod Security baseline) fails the migration in Pending, naming the
// refusal, before the source was paused or checkpointed: a dry run of the
// target's creation.
func TestATargetTheAPIServerWouldRefuseFailsBeforeThePause(t *testing.T) {
	w := newWorld(t, func(w *world, _ *Options) { w.sourceMutate = func(p *corev1.Pod) { p.Spec.HostNetwork = true } })
	ctx := context.Background()
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: w.ns + "-no-host-network-targets"},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: w.ns}},
				ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}}},
			},
			Validations: []admissionregistrationv1.Validation{{
				Expression: "!(has(object.metadata.labels) && 'migration.ms2m.io/migration' in object.metadata.labels) || !object.spec.?hostNetwork.orValue(false)",
				Message:    "no host network for migration targets",
			}},
		},
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: policy.Name},
		Spec:       admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: policy.Name, ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}},
	}
	must(t, api.Create(ctx, policy))
	must(t, api.Create(ctx, binding))
	t.Cleanup(func() { _ = api.Delete(context.Background(), binding); _ = api.Delete(context.Background(), policy) })
	// The API server enforces a new policy once its informers have it.
	probe := migrationtest.SourcePod(w.ns, "probe", w.targetNode, "127.0.0.1:1")
	probe.Labels = map[string]string{v1.LabelMigration: "probe"}
	probe.Spec.HostNetwork = true
	expect.Eventually(t, "the policy enforced", func() error {
		if err := api.Create(ctx, probe.DeepCopy(), client.DryRunAll); err == nil {
			return errors.New("a host-network target is still admitted")
		}
		return nil
	})

	got := w.until(w.migrate("refused"), "Failed", inPhase(v1.PhaseFailed))
	if c := condition(got, v1.ConditionReady); c == nil || c.Reason != v1.ReasonTargetPodRefused || !strings.Contains(got.Status.FailureReason, "no host network for migration targets") {
		t.Fatalf("Ready %+v, failure %q; want %s naming the policy's message", c, got.Status.FailureReason, v1.ReasonTargetPodRefused)
	}
	if enteredAt(&got.Status, v1.PhaseCheckpointing) != (time.Time{}) || slices.Contains(w.sidecars.Calls(), "Pause") {
		t.Fatalf("the source was paused (calls %v, phases %v); want the refusal found before", w.sidecars.Calls(), got.Status.PhaseTransitions)
	}
	if w.pod(w.source) == nil {
		t.Fatal("the source pod is gone")
	}
}
