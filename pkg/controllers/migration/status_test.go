package migration

import (
	"testing"
	"time"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

func TestDecideCutover(t *testing.T) {
	budget, cutoff := 100*time.Millisecond, 120*time.Second
	for _, tc := range []struct {
		name       string
		lag        int64
		mu, lambda float64
		elapsed    time.Duration
		now        bool
		reason     string
	}{
		{"caught up", 0, 100, 10, time.Second, true, v1.ReasonCaughtUp},
		{"lag drains within the budget", 5, 100, 10, time.Second, true, v1.ReasonCaughtUp},
		{"lag too large for the budget", 50, 100, 10, time.Second, false, ""},
		{"no replay rate measured yet", 5, 0, 0, time.Second, false, ""},
		{"not converging, before the cutoff", 500, 50, 80, time.Minute, false, ""},
		{"not converging, cutoff reached", 500, 50, 80, cutoff, true, v1.ReasonReplayCutoff},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := decideCutover(tc.lag, tc.mu, tc.lambda, budget, tc.elapsed, cutoff)
			if c.Now != tc.now || c.Reason != tc.reason {
				t.Fatalf("decision %+v, want now=%v reason=%q", c, tc.now, tc.reason)
			}
		})
	}
}

func TestPhaseBookkeeping(t *testing.T) {
	var st v1.StatefulMigrationStatus
	t0 := time.Unix(1000, 0)
	enterPhase(&st, v1.PhasePending, t0)
	enterPhase(&st, v1.PhaseCheckpointing, t0.Add(2*time.Second))
	if enterPhase(&st, v1.PhaseCheckpointing, t0.Add(3*time.Second)) {
		t.Fatal("re-entering the current phase recorded a transition")
	}
	enterPhase(&st, v1.PhaseCompleted, t0.Add(5*time.Second))
	if st.CompletionTime == nil || !st.CompletionTime.Time.Equal(st.PhaseTransitions[2].EnteredTime.Time) {
		t.Fatalf("completion time %v", st.CompletionTime)
	}
	d := phaseDurations(&st)
	if len(d) != 2 || d[0].Duration != 2*time.Second || d[1].Duration != 3*time.Second {
		t.Fatalf("durations %+v", d)
	}
	if got := enteredAt(&st, v1.PhaseCheckpointing); !got.Equal(t0.Add(2 * time.Second)) {
		t.Fatalf("enteredAt = %v", got)
	}
}

func TestOffsetsRoundTrip(t *testing.T) {
	next := map[int]int64{1: 40, 0: 12}
	offs := toOffsets("orders", next)
	if offs[0].Partition != 0 || offs[1].Offset != 40 {
		t.Fatalf("offsets %+v not sorted by partition", offs)
	}
	if got := fromOffsets(offs); got[0] != 12 || got[1] != 40 {
		t.Fatalf("round trip %v", got)
	}
}
