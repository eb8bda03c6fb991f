package migrationclient

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// Every figure here is computed from times the controller wrote into the
// status, never from the reader's clock (except how long the current phase
// has lasted so far), so what one reader prints another prints too.

// FormatDuration renders d for people: milliseconds below a second,
// seconds to the millisecond below a minute, then tenths of a second.
func FormatDuration(d time.Duration) string { return v1.FormatDuration(d) }

// PhaseSpan is one phase a migration went through.
type PhaseSpan struct {
	Phase   v1.Phase
	Entered time.Time
	// Duration is how long the phase lasted; for the current phase of a
	// running migration, how long it has lasted until now; zero for the
	// final phase (Completed or Failed).
	Duration time.Duration
	// Current marks the phase a running migration is in.
	Current bool
}

// PhaseSpans lists the phases of st in order; now bounds the current one.
func PhaseSpans(st *v1.StatefulMigrationStatus, now time.Time) []PhaseSpan {
	tr := st.PhaseTransitions
	out := make([]PhaseSpan, 0, len(tr))
	for i, t := range tr {
		s := PhaseSpan{Phase: t.Phase, Entered: t.EnteredTime.Time}
		switch {
		case i+1 < len(tr):
			s.Duration = tr[i+1].EnteredTime.Sub(t.EnteredTime.Time)
		case !t.Phase.IsTerminal():
			s.Duration, s.Current = now.Sub(t.EnteredTime.Time), true
		}
		out = append(out, s)
	}
	return out
}

// Elapsed is how long the migration has run: from entering Pending to
// finishing, or to now while it runs.
func Elapsed(st *v1.StatefulMigrationStatus, now time.Time) time.Duration {
	tr := st.PhaseTransitions
	if len(tr) == 0 {
		return 0
	}
	end := now
	if last := tr[len(tr)-1]; last.Phase.IsTerminal() {
		end = last.EnteredTime.Time
	}
	return end.Sub(tr[0].EnteredTime.Time)
}

// Held says why an unfinished migration waits for capacity ("" when it
// does not): the message of its Ready condition with reason
// WaitingForCapacity.
func Held(m *v1.StatefulMigration) string {
	if m.Status.Phase.IsTerminal() {
		return ""
	}
	if c := meta.FindStatusCondition(m.Status.Conditions, v1.ConditionReady); c != nil && c.Reason == v1.ReasonWaitingForCapacity {
		return c.Message
	}
	return ""
}

// Handover says what the sidecars reported at a completed migration's
// handover, per partition: the fence F, where the source's sidecar
// stopped (the group's committed offsets, which it checked against what
// its app acknowledged), and where the target's sidecar says it went live
// (status.targetLiveOffsets), and whether the two meet. That is what was
// observed; whether every message was processed exactly once is for the
// app's own records to tell. "" when no handover was recorded.
func Handover(m *v1.StatefulMigration) string {
	if m.Status.Phase != v1.PhaseCompleted || !meta.IsStatusConditionTrue(m.Status.Conditions, v1.ConditionHandedOver) {
		return ""
	}
	if len(m.Status.FenceOffsets) == 0 {
		return "handed over; no fence offsets were recorded"
	}
	fence := slices.SortedFunc(slices.Values(m.Status.FenceOffsets), func(a, b v1.PartitionOffset) int { return cmp.Compare(a.Partition, b.Partition) })
	offs := make([]string, len(fence))
	for i, o := range fence {
		offs[i] = fmt.Sprintf("%d@%d", o.Partition, o.Offset)
	}
	said := "handed over at the fence " + strings.Join(offs, " ")
	if len(m.Status.TargetLiveOffsets) == 0 {
		return said + ": the source stopped there; the target's sidecar did not report where it went live"
	}
	live := map[int32]int64{}
	for _, o := range m.Status.TargetLiveOffsets {
		live[o.Partition] = o.Offset
	}
	var differ []string
	for _, f := range fence {
		switch l, ok := live[f.Partition]; {
		case !ok:
			differ = append(differ, fmt.Sprintf("partition %d: no live position reported", f.Partition))
		case l > f.Offset:
			differ = append(differ, fmt.Sprintf("partition %d: live from %d, %d after the fence (skipped)", f.Partition, l, l-f.Offset))
		case l < f.Offset:
			differ = append(differ, fmt.Sprintf("partition %d: live from %d, %d before the fence (repeated)", f.Partition, l, f.Offset-l))
		}
	}
	if len(differ) == 0 {
		return said + ": the source stopped there and the target went live from exactly there"
	}
	return said + ", but the target went live elsewhere: " + strings.Join(differ, "; ")
}

// Summary is the one line that tells how a finished migration ended: total
// time, downtime, messages replayed and the handover, or why it failed and
// what the rollback did. For a running migration it tells the phase.
func Summary(m *v1.StatefulMigration) string {
	st := &m.Status
	total := FormatDuration(Elapsed(st, time.Time{}))
	switch st.Phase {
	case v1.PhaseCompleted:
		parts := []string{"downtime not measured"}
		if st.Downtime != nil {
			parts[0] = "downtime " + FormatDuration(st.Downtime.Duration)
			if split := st.Stalls.Split(); split != "" {
				parts[0] += " (" + split + ")"
			}
		}
		replayed := int64(0)
		if st.Replay != nil {
			replayed = st.Replay.Replayed
		}
		parts = append(parts, fmt.Sprintf("%d messages replayed", replayed))
		if h := Handover(m); h != "" {
			parts = append(parts, h)
		}
		return fmt.Sprintf("Completed in %s: %s", total, strings.Join(parts, ", "))
	case v1.PhaseFailed:
		reason := st.FailureReason
		if reason == "" {
			reason = "no reason recorded"
		}
		if c := meta.FindStatusCondition(st.Conditions, v1.ConditionReady); c != nil && c.Reason != "" {
			reason = c.Reason + ": " + reason
		}
		line := fmt.Sprintf("Failed after %s: %s", total, reason)
		if c := meta.FindStatusCondition(st.Conditions, v1.ConditionRolledBack); c != nil && c.Message != "" {
			line += "; rolled back: " + c.Message
		}
		return line
	case "":
		return "not yet picked up by the ms2m controller"
	default:
		return fmt.Sprintf("%s (running)", st.Phase)
	}
}

// DowntimeLine is a migration's downtime, the stalls it adds up and who
// measured them.
func DowntimeLine(st *v1.StatefulMigrationStatus) string {
	if st.Downtime == nil {
		return "not measured"
	}
	by := "measured by the sidecars"
	if st.Stalls == nil || st.Stalls.Measured == v1.StallsByController {
		by = "partly measured by the controller"
	}
	split := strings.TrimSuffix(st.Stalls.Split(), ", partly measured by the controller")
	if split == "" {
		return FormatDuration(st.Downtime.Duration) + " (" + by + ")"
	}
	return FormatDuration(st.Downtime.Duration) + " (" + split + ", " + by + ")"
}

// StallPaths says where a migration's stalls went: the node agent's steps
// of the checkpoint pause (its report's steps) and the controller's path of
// the handover (the HandedOver condition's); "" where not reported.
func StallPaths(m *v1.StatefulMigration) (pause, handover string) {
	if ck, err := v1.AgentResultOf(m, v1.AnnotationAgentCheckpoint); err == nil && ck != nil && ck.Steps != nil {
		pause = ck.Steps.String()
	}
	if c := meta.FindStatusCondition(m.Status.Conditions, v1.ConditionHandedOver); c != nil {
		_, handover, _ = strings.Cut(c.Message, v1.HandoverPathPrefix)
	}
	return pause, handover
}

// Timings renders a finished migration's phase durations and downtime, one
// per line.
func Timings(m *v1.StatefulMigration) string {
	var b strings.Builder
	spans := PhaseSpans(&m.Status, time.Time{})
	for _, s := range spans {
		if !s.Phase.IsTerminal() && !s.Current {
			fmt.Fprintf(&b, "  %-13s %10s\n", s.Phase, FormatDuration(s.Duration))
		}
	}
	if len(spans) > 1 {
		fmt.Fprintf(&b, "  %-13s %10s\n", "total", FormatDuration(Elapsed(&m.Status, time.Time{})))
	}
	if st := m.Status.Stalls; st != nil {
		// Each stall, then where it went, as the node agent and the
		// controller reported it.
		pause, handover := StallPaths(m)
		if st.CheckpointPause != nil {
			fmt.Fprintf(&b, "  %-13s %10s (the source held deliveries for the checkpoint)\n", "pause", FormatDuration(st.CheckpointPause.Duration))
			if pause != "" {
				fmt.Fprintf(&b, "  %-24s %s\n", "", pause)
			}
		}
		if st.Handover != nil {
			fmt.Fprintf(&b, "  %-13s %10s (source fenced → target live)\n", "handover", FormatDuration(st.Handover.Duration))
			if handover != "" {
				fmt.Fprintf(&b, "  %-24s %s\n", "", handover)
			}
		}
	}
	if m.Status.Downtime != nil {
		fmt.Fprintf(&b, "  %-13s %10s (the stalls added up)\n", "downtime", FormatDuration(m.Status.Downtime.Duration))
	}
	if m.Status.Phase == v1.PhaseFailed {
		b.WriteString("  failed: " + m.Status.FailureReason + "\n")
	}
	return b.String()
}

// ReplayLine describes a replay sample: lag, μ, λ, messages replayed and,
// when the target gains on the stream, when it will have caught up.
func ReplayLine(r *v1.ReplayProgress) string {
	s := fmt.Sprintf("lag %d, μ %d/s, λ %d/s, %d replayed", r.Lag, r.ReplayRatePerSecond, r.ArrivalRatePerSecond, r.Replayed)
	if gain := r.ReplayRatePerSecond - r.ArrivalRatePerSecond; r.Lag > 0 && gain > 0 {
		s += ", caught up in ~" + FormatDuration(time.Duration(float64(r.Lag)/float64(gain)*float64(time.Second)))
	}
	return s
}
