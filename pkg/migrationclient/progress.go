package migrationclient

import (
	"fmt"
	"time"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// Line is one line of progress.
type Line struct {
	Text string
	// Transient lines (replay samples) are superseded by the next line: a
	// terminal may redraw them in place, a log keeps each.
	Transient bool
}

// Progress turns the successive versions of one migration, as a watch
// delivers them, into the lines a person follows: each phase entered with
// its time since the start, why a migration is held, each replay sample,
// and the Summary once it has finished. Observing the same version twice
// adds nothing.
type Progress struct {
	reported int
	held     string
	sample   v1.ReplayProgress
	done     bool
}

// Observe returns the lines m adds to what was already reported.
func (p *Progress) Observe(m *v1.StatefulMigration) []Line {
	st := &m.Status
	var out []Line
	// A replay sample written together with the next phase (the last one
	// before the fence) was taken in the phase before: it goes before
	// that phase's line, labelled with the phase it was taken in.
	var sample *Line
	if r := st.Replay; r != nil && !st.Phase.IsTerminal() && st.Phase != v1.PhasePending && !sameSample(r, &p.sample) {
		p.sample = *r.DeepCopy()
		at, phase := time.Time{}, st.Phase
		if r.LastSampleTime != nil {
			at = r.LastSampleTime.Time
			for _, t := range st.PhaseTransitions {
				if !t.EnteredTime.After(at) {
					phase = t.Phase
				}
			}
		} else if n := len(st.PhaseTransitions); n > 0 {
			at = st.PhaseTransitions[n-1].EnteredTime.Time
		}
		sample = &Line{Text: stamp(st, at, phase, ReplayLine(r)), Transient: true}
		for ; p.reported < len(st.PhaseTransitions) && !st.PhaseTransitions[p.reported].EnteredTime.After(at); p.reported++ {
			out = append(out, p.phaseLine(m, st.PhaseTransitions[p.reported])...)
		}
		out = append(out, *sample)
	}
	for ; p.reported < len(st.PhaseTransitions); p.reported++ {
		out = append(out, p.phaseLine(m, st.PhaseTransitions[p.reported])...)
	}
	if held := Held(m); !st.Phase.IsTerminal() && held != p.held {
		p.held = held
		if p.held != "" {
			out = append(out, Line{Text: fmt.Sprintf("%10s  %-13s held: %s", "", st.Phase, p.held)})
		}
	}
	if st.Phase.IsTerminal() && !p.done {
		p.done = true
		out = append(out, Line{Text: Summary(m)})
	}
	return out
}

// phaseLine is the line of one phase transition (none for the final
// phase: the Summary says it).
func (p *Progress) phaseLine(m *v1.StatefulMigration, t v1.PhaseTransition) []Line {
	if t.Phase.IsTerminal() {
		return nil
	}
	return []Line{{Text: stamp(&m.Status, t.EnteredTime.Time, t.Phase, phaseDetail(m, t.Phase))}}
}

// Done reports whether the Summary has been returned.
func (p *Progress) Done() bool { return p.done }

func sameSample(a, b *v1.ReplayProgress) bool {
	ta, tb := a.LastSampleTime, b.LastSampleTime
	sameTime := (ta == nil) == (tb == nil) && (ta == nil || ta.Equal(tb))
	return sameTime && a.Lag == b.Lag && a.Replayed == b.Replayed &&
		a.ReplayRatePerSecond == b.ReplayRatePerSecond && a.ArrivalRatePerSecond == b.ArrivalRatePerSecond
}

// stamp prefixes text with the time since the migration started and the
// phase.
func stamp(st *v1.StatefulMigrationStatus, at time.Time, phase v1.Phase, text string) string {
	since := ""
	if len(st.PhaseTransitions) > 0 && !at.IsZero() {
		since = "+" + FormatDuration(at.Sub(st.PhaseTransitions[0].EnteredTime.Time))
	}
	return fmt.Sprintf("%10s  %-13s %s", since, phase, text)
}

func phaseDetail(m *v1.StatefulMigration, phase v1.Phase) string {
	st := &m.Status
	target := st.TargetNode
	if target == "" {
		target = "the node the controller chooses"
	}
	switch phase {
	case v1.PhasePending:
		return "validating pod " + m.Spec.SourcePod + " and choosing the target"
	case v1.PhaseCheckpointing:
		return fmt.Sprintf("pausing %s%s to checkpoint it; target %s", m.Spec.SourcePod, onNode(st.SourceNode), target)
	case v1.PhaseTransferring:
		return "pushing the checkpoint image"
	case v1.PhaseRestoring:
		return "restoring the target pod on " + target
	case v1.PhaseReplaying:
		return "the target replays from the checkpoint offsets while the source serves"
	case v1.PhaseFinalizing:
		return "source fenced; the target takes over at the fence offsets"
	}
	return ""
}

func onNode(n string) string {
	if n == "" {
		return ""
	}
	return " on " + n
}
