package migration

import (
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// Pure functions over the status: what the reconciler computes, testable
// without a cluster.

// enterPhase moves the migration to phase (once) at now.
func enterPhase(st *v1.StatefulMigrationStatus, phase v1.Phase, now time.Time) bool {
	if st.Phase == phase {
		return false
	}
	st.Phase = phase
	st.PhaseTransitions = append(st.PhaseTransitions, v1.PhaseTransition{Phase: phase, EnteredTime: metav1.NewMicroTime(now)})
	if phase.IsTerminal() && st.CompletionTime == nil {
		t := metav1.NewTime(now)
		st.CompletionTime = &t
	}
	return true
}

// enteredAt is when the migration entered phase (zero if never).
func enteredAt(st *v1.StatefulMigrationStatus, phase v1.Phase) time.Time {
	for i := len(st.PhaseTransitions) - 1; i >= 0; i-- {
		if st.PhaseTransitions[i].Phase == phase {
			return st.PhaseTransitions[i].EnteredTime.Time
		}
	}
	return time.Time{}
}

// phaseDurations returns how long each finished phase took, in order.
func phaseDurations(st *v1.StatefulMigrationStatus) []struct {
	Phase    v1.Phase
	Duration time.Duration
} {
	var out []struct {
		Phase    v1.Phase
		Duration time.Duration
	}
	for i := 0; i+1 < len(st.PhaseTransitions); i++ {
		out = append(out, struct {
			Phase    v1.Phase
			Duration time.Duration
		}{st.PhaseTransitions[i].Phase, st.PhaseTransitions[i+1].EnteredTime.Sub(st.PhaseTransitions[i].EnteredTime.Time)})
	}
	return out
}

func setCondition(st *v1.StatefulMigrationStatus, generation int64, t string, ok bool, reason, msg string) {
	status := metav1.ConditionFalse
	if ok {
		status = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg, ObservedGeneration: generation})
}

// toOffsets turns a sidecar's per-partition positions into status form,
// sorted by partition.
func toOffsets(topic string, next map[int]int64) []v1.PartitionOffset {
	out := make([]v1.PartitionOffset, 0, len(next))
	for p, o := range next {
		out = append(out, v1.PartitionOffset{Topic: topic, Partition: int32(p), Offset: o})
	}
	slices.SortFunc(out, func(a, b v1.PartitionOffset) int { return int(a.Partition - b.Partition) })
	return out
}

func fromOffsets(offs []v1.PartitionOffset) map[int]int64 {
	out := make(map[int]int64, len(offs))
	for _, o := range offs {
		out[int(o.Partition)] = o.Offset
	}
	return out
}

// Cutover is the replay phase's decision.
type Cutover struct {
	Now    bool
	Reason string
	// Message explains the decision for people.
	Message string
}

// decideCutover applies the threshold rule: cut over when the target has
// caught up, when the projected time to drain the lag at the replay rate mu
// fits the downtime budget, or when the replay has run for cutoff (the
// bound that keeps a non-converging replay, mu <= lambda, finite: downtime
// is then lag/mu).
func decideCutover(lag int64, mu, lambda float64, budget, elapsed, cutoff time.Duration) Cutover {
	switch {
	case lag <= 0:
		return Cutover{Now: true, Reason: v1.ReasonCaughtUp, Message: "the target has replayed everything the source processed"}
	case mu > 0 && time.Duration(float64(lag)/mu*float64(time.Second)) <= budget:
		return Cutover{Now: true, Reason: v1.ReasonCaughtUp,
			Message: "projected drain of the remaining lag fits the downtime budget"}
	case elapsed >= cutoff:
		return Cutover{Now: true, Reason: v1.ReasonReplayCutoff,
			Message: "replay cutoff reached; the rest of the lag is drained during the handover"}
	}
	msg := "replaying"
	if mu <= lambda && lambda > 0 {
		msg = "replaying slower than messages arrive; the cutoff will end the replay"
	}
	return Cutover{Message: msg}
}
