package migration

import (
	"maps"
	"slices"
	"testing"
	"time"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// fencedUnanswered starts a migration and brings it to Finalizing, the source
// fenced, without a handover yet: the one the fence's reconcile asks
// right away gets no answer (a connection error, asked again).
func fencedUnanswered(w *world, name string) *v1.StatefulMigration {
	w.t.Helper()
	w.sidecars.Unreachable("Handover")
	m := w.until(w.migrate(name), "Finalizing", inPhase(v1.PhaseFinalizing))
	w.sidecars.Allow("Handover")
	return m
}

// A handover whose answer is lost (the sidecar's 504) is rolled back only
// once the target, asked to abort, says it is not live and never will be:
// the source resumes after the abort, never next to a live target.
func TestLostHandoverAbortsTheTargetBeforeTheSourceResumes(t *testing.T) {
	w := newWorld(t)
	m := fencedUnanswered(w, "lost")
	w.sidecars.Refuse("Handover", "not at the fence before the deadline")
	w.sidecars.Unreachable("Position") // the controller cannot ask where the target stands
	got := w.until(m, "Failed", inPhase(v1.PhaseFailed))
	calls := w.sidecars.Calls()
	abort := slices.Index(calls, "Abort")
	if abort < 0 || !slices.Contains(calls[abort:], "Rejoin") || slices.Index(calls, "Fence") > abort {
		t.Fatalf("sidecar calls %v: want the target aborted before the source resumes", calls)
	}
	if c := condition(got, v1.ConditionHandedOver); c != nil && c.Status == "True" {
		t.Fatalf("handed over %+v on a failed migration", c)
	}
}

// A target that went live although nobody heard its answer is found live
// by the rollback's abort: the migration completes instead of resuming the
// source next to it.
func TestTargetLiveDespiteALostAnswerCompletes(t *testing.T) {
	w := newWorld(t)
	m := fencedUnanswered(w, "live")
	w.sidecars.Refuse("Handover", "connection reset (FAKE: the answer was lost)")
	w.sidecars.Unreachable("Position")
	w.sidecars.WentLive()
	got := w.until(m, "Completed", inPhase(v1.PhaseCompleted))
	calls := w.sidecars.Calls()
	if n := w.sidecars.Count("Resume"); n != 1 || slices.Index(calls, "Resume") > slices.Index(calls, "Fence") || slices.Contains(calls, "Rejoin") {
		t.Fatalf("sidecar calls %v: the fenced source was resumed", calls)
	}
	if c := condition(got, v1.ConditionHandedOver); c == nil || c.Status != "True" {
		t.Fatalf("HandedOver %+v; want True", c)
	}
	if w.pod(w.source) != nil {
		t.Fatal("the source is still there after the handover")
	}
}

// A target that cannot say whether it went live keeps the source fenced,
// past the phase's deadline, until it answers.
func TestUnanswerableTargetKeepsTheSourceFenced(t *testing.T) {
	w := newWorld(t)
	m := fencedUnanswered(w, "silent")
	w.sidecars.Refuse("Handover", "not at the fence before the deadline")
	w.sidecars.Unreachable("Position")
	w.sidecars.Unreachable("Abort")
	resumes := w.sidecars.Count("Rejoin")
	w.clock.Step(DefaultOptions().Timeouts.Finalize + time.Second)
	for range 5 {
		_, _ = w.reconcile(m)
	}
	if got := w.get(m); got.Status.Phase != v1.PhaseFinalizing || w.sidecars.Count("Rejoin") != resumes {
		t.Fatalf("phase %s, %d rejoins: want Finalizing with the source still fenced", got.Status.Phase, w.sidecars.Count("Rejoin")-resumes)
	}
	if mode := w.pod(w.source).Annotations[v1.AnnotationSidecarMode]; mode != v1.SidecarModeFenced {
		t.Fatalf("source's sidecar mode %q; want fenced", mode)
	}
	w.sidecars.Allow("Abort")
	w.until(m, "Failed", inPhase(v1.PhaseFailed))
	if w.sidecars.Count("Rejoin") != resumes+1 {
		t.Fatal("the source was not rejoined once the target answered")
	}
}

// The fence F is the group's committed offsets as the fenced source
// answers them, not the partitions it delivered from since its sidecar
// last started: a partition idle since a restart is in F too, and in
// both strategies.
func TestFenceNamesIdlePartitions(t *testing.T) {
	for name, opts := range map[string][]option{"ShadowPod": nil, "Sequential": {ownedByStatefulSet}} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t, opts...)
			w.sidecars.SetIdle(map[int]int64{2: 7})
			m := w.until(w.migrate("idle"), "Completed", inPhase(v1.PhaseCompleted))
			got := map[int32]int64{}
			for _, o := range m.Status.FenceOffsets {
				got[o.Partition] = o.Offset
			}
			if want := map[int32]int64{0: 100, 1: 40, 2: 7}; !maps.Equal(got, want) {
				t.Fatalf("fence offsets %v; want %v (partition 2 idle since the sidecar restarted)", got, want)
			}
		})
	}
}

// One replica of several in a group: the source's sidecar names its
// partitions, and O and F cover those only, not the partitions it held
// before the group last rebalanced (still in its positions) nor the other
// replicas'.
func TestOneReplicaCheckpointsItsPartitionsOnly(t *testing.T) {
	w := newWorld(t)
	w.sidecars.SetAssigned([]int{1})
	m := w.until(w.migrate("replica"), "Completed", inPhase(v1.PhaseCompleted))
	for name, offs := range map[string][]v1.PartitionOffset{"checkpoint": m.Status.CheckpointOffsets, "fence": m.Status.FenceOffsets} {
		if len(offs) != 1 || offs[0].Partition != 1 {
			t.Fatalf("%s offsets %v; want partition 1 only", name, offs)
		}
	}
}

// A fence the sidecar cannot answer for now (503: it could not read the
// group's committed offsets from Kafka) is asked again, not taken as a
// refusal: the migration completes once Kafka answers.
func TestUnavailableFenceIsAskedAgain(t *testing.T) {
	w := newWorld(t)
	w.sidecars.Unavailable("Fence", "reading the fence from the group's committed offsets: broker unreachable (FAKE)")
	m := w.migrate("busy")
	w.until(m, "the fence asked three times", func(got *v1.StatefulMigration) bool {
		if got != nil && got.Status.Phase == v1.PhaseFailed {
			t.Fatalf("failed on a 503 from the fence: %s", got.Status.FailureReason)
		}
		return w.sidecars.Busied("Fence") >= 3
	})
	w.sidecars.Allow("Fence")
	w.until(m, "Completed", inPhase(v1.PhaseCompleted))
}
