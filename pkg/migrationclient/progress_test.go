package migrationclient

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) metav1.MicroTime { return metav1.NewMicroTime(t0.Add(d)) }

// migration builds a migration that went through phases, entered at the
// given offsets from t0.
func migration(steps ...any) *v1.StatefulMigration {
	m := &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: "orders-0-abcde"}, Spec: v1.StatefulMigrationSpec{SourcePod: "orders-0"}}
	for i := 0; i+1 < len(steps); i += 2 {
		p, d := steps[i].(v1.Phase), steps[i+1].(time.Duration)
		m.Status.Phase = p
		m.Status.PhaseTransitions = append(m.Status.PhaseTransitions, v1.PhaseTransition{Phase: p, EnteredTime: at(d)})
	}
	return m
}

func texts(lines []Line) []string {
	out := []string{}
	for _, l := range lines {
		out = append(out, strings.Join(strings.Fields(l.Text), " "))
	}
	return out
}

func TestProgressReportsEachChangeOnce(t *testing.T) {
	var p Progress
	m := migration(v1.PhasePending, time.Duration(0))
	steps := []struct {
		name   string
		change func()
		want   []string
	}{
		{"pending", func() {}, []string{"+0.0ms Pending validating pod orders-0 and choosing the target"}},
		{"the same version again", func() {}, []string{}},
		{"held for capacity", func() {
			m.Status.Conditions = []metav1.Condition{{Type: v1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1.ReasonWaitingForCapacity, Message: "2 migrations run on node-a"}}
		}, []string{"Pending held: 2 migrations run on node-a"}},
		{"two phases in one update", func() {
			m.Status.Conditions = []metav1.Condition{{Type: v1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1.ReasonInProgress, Message: "migrating"}}
			m.Status.SourceNode, m.Status.TargetNode = "node-a", "node-b"
			m.Status.Phase = v1.PhaseTransferring
			m.Status.PhaseTransitions = append(m.Status.PhaseTransitions,
				v1.PhaseTransition{Phase: v1.PhaseCheckpointing, EnteredTime: at(120 * time.Millisecond)},
				v1.PhaseTransition{Phase: v1.PhaseTransferring, EnteredTime: at(1500 * time.Millisecond)})
		}, []string{
			"+120.0ms Checkpointing pausing orders-0 on node-a to checkpoint it; target node-b",
			"+1.500s Transferring pushing the checkpoint image",
		}},
		{"replay sample", func() {
			m.Status.Phase = v1.PhaseReplaying
			m.Status.PhaseTransitions = append(m.Status.PhaseTransitions, v1.PhaseTransition{Phase: v1.PhaseReplaying, EnteredTime: at(2 * time.Second)})
			ts := at(2500 * time.Millisecond)
			m.Status.Replay = &v1.ReplayProgress{Replayed: 1200, Lag: 600, ReplayRatePerSecond: 900, ArrivalRatePerSecond: 300, LastSampleTime: &ts}
		}, []string{
			"+2.000s Replaying the target replays from the checkpoint offsets while the source serves",
			"+2.500s Replaying lag 600, μ 900/s, λ 300/s, 1200 replayed, caught up in ~1.000s",
		}},
		{"completed", func() {
			m.Status.Phase = v1.PhaseCompleted
			m.Status.PhaseTransitions = append(m.Status.PhaseTransitions, v1.PhaseTransition{Phase: v1.PhaseCompleted, EnteredTime: at(3210 * time.Millisecond)})
			m.Status.Downtime = &metav1.Duration{Duration: 41200 * time.Microsecond}
			meta.SetStatusCondition(&m.Status.Conditions, metav1.Condition{Type: v1.ConditionHandedOver, Status: metav1.ConditionTrue, Reason: v1.ReasonSucceeded})
			m.Status.FenceOffsets = []v1.PartitionOffset{{Topic: "orders", Partition: 0, Offset: 2400}}
			m.Status.TargetLiveOffsets = []v1.PartitionOffset{{Topic: "orders", Partition: 0, Offset: 2400}}
		}, []string{"Completed in 3.210s: downtime 41.2ms, 1200 messages replayed, handed over at the fence 0@2400: the source stopped there and the target went live from exactly there"}},
		{"after the end", func() {}, []string{}},
	}
	for _, s := range steps {
		s.change()
		if got := texts(p.Observe(m.DeepCopy())); strings.Join(got, "\n") != strings.Join(s.want, "\n") {
			t.Errorf("%s: lines\n%s\nwant\n%s", s.name, strings.Join(got, "\n"), strings.Join(s.want, "\n"))
		}
	}
	if !p.Done() {
		t.Error("Done() = false after Completed")
	}
}

func TestReplaySamplesAreTransient(t *testing.T) {
	var p Progress
	m := migration(v1.PhasePending, time.Duration(0), v1.PhaseReplaying, time.Second)
	m.Status.Replay = &v1.ReplayProgress{Lag: 10}
	lines := p.Observe(m)
	if n := len(lines); n != 3 || lines[0].Transient || lines[1].Transient || !lines[2].Transient {
		t.Fatalf("lines %+v: want two phase lines then one transient replay line", lines)
	}
}

func TestSummary(t *testing.T) {
	completed := func(handedOver bool) *v1.StatefulMigration {
		m := migration(v1.PhasePending, time.Duration(0), v1.PhaseCompleted, 2*time.Second)
		m.Status.Downtime = &metav1.Duration{Duration: 80 * time.Millisecond}
		m.Status.Replay = &v1.ReplayProgress{Replayed: 42}
		if handedOver {
			meta.SetStatusCondition(&m.Status.Conditions, metav1.Condition{Type: v1.ConditionHandedOver, Status: metav1.ConditionTrue, Reason: v1.ReasonSucceeded})
		}
		return m
	}
	failed := migration(v1.PhasePending, time.Duration(0), v1.PhaseCheckpointing, 100*time.Millisecond, v1.PhaseFailed, 1200*time.Millisecond)
	failed.Status.FailureReason = "criu dump: permission denied"
	meta.SetStatusCondition(&failed.Status.Conditions, metav1.Condition{Type: v1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1.ReasonCheckpointFailed})
	meta.SetStatusCondition(&failed.Status.Conditions, metav1.Condition{Type: v1.ConditionRolledBack, Status: metav1.ConditionTrue, Reason: v1.ReasonCheckpointFailed, Message: "the source serves again"})

	for _, tc := range []struct {
		name string
		m    *v1.StatefulMigration
		want string
	}{
		{"completed, no offsets recorded", completed(true), "Completed in 2.000s: downtime 80.0ms, 42 messages replayed, handed over; no fence offsets were recorded"},
		{"completed, no handover recorded: no claim", completed(false), "Completed in 2.000s: downtime 80.0ms, 42 messages replayed"},
		{"failed", failed, "Failed after 1.200s: CheckpointFailed: criu dump: permission denied; rolled back: the source serves again"},
		{"not picked up", migration(), "not yet picked up by the ms2m controller"},
		{"running", migration(v1.PhasePending, time.Duration(0), v1.PhaseRestoring, time.Second), "Restoring (running)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Summary(tc.m); got != tc.want {
				t.Errorf("Summary = %q\nwant      %q", got, tc.want)
			}
		})
	}
}

// The handover line reports per partition what the sidecars said: the
// fence and where the target went live, and says which partitions differ.
func TestHandoverStatesWhatWasObserved(t *testing.T) {
	offsets := func(pairs ...int64) []v1.PartitionOffset {
		var out []v1.PartitionOffset
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, v1.PartitionOffset{Topic: "orders", Partition: int32(pairs[i]), Offset: pairs[i+1]})
		}
		return out
	}
	handedOver := func(fence, live []v1.PartitionOffset) *v1.StatefulMigration {
		m := migration(v1.PhasePending, time.Duration(0), v1.PhaseCompleted, 2*time.Second)
		meta.SetStatusCondition(&m.Status.Conditions, metav1.Condition{Type: v1.ConditionHandedOver, Status: metav1.ConditionTrue, Reason: v1.ReasonSucceeded})
		m.Status.FenceOffsets, m.Status.TargetLiveOffsets = fence, live
		return m
	}
	for _, tc := range []struct {
		name string
		m    *v1.StatefulMigration
		want string
	}{
		{"they meet", handedOver(offsets(1, 101, 0, 140), offsets(0, 140, 1, 101)),
			"handed over at the fence 0@140 1@101: the source stopped there and the target went live from exactly there"},
		{"the target did not say", handedOver(offsets(0, 140), nil),
			"handed over at the fence 0@140: the source stopped there; the target's sidecar did not report where it went live"},
		{"one skipped, one repeated, one missing", handedOver(offsets(0, 140, 1, 101, 2, 7), offsets(0, 142, 1, 100)),
			"handed over at the fence 0@140 1@101 2@7, but the target went live elsewhere: partition 0: live from 142, 2 after the fence (skipped); " +
				"partition 1: live from 100, 1 before the fence (repeated); partition 2: no live position reported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Handover(tc.m); got != tc.want {
				t.Errorf("Handover = %q\nwant       %q", got, tc.want)
			}
		})
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second:                          "0.0ms",
		41234 * time.Microsecond:              "41.2ms",
		3210 * time.Millisecond:               "3.210s",
		2*time.Minute + 3456*time.Millisecond: "2m3.5s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestTimingsListsFinishedPhases(t *testing.T) {
	m := migration(v1.PhasePending, time.Duration(0), v1.PhaseCheckpointing, 10*time.Millisecond, v1.PhaseCompleted, 510*time.Millisecond)
	m.Status.Downtime = &metav1.Duration{Duration: 5 * time.Millisecond}
	got := Timings(m)
	for _, want := range []string{"Pending", "10.0ms", "Checkpointing", "500.0ms", "total", "510.0ms", "downtime", "5.0ms"} {
		if !strings.Contains(got, want) {
			t.Errorf("Timings lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "Completed") {
		t.Errorf("Timings lists the final phase as if it had a duration:\n%s", got)
	}
}

// Each stall is followed by where it went: the agent's checkpoint steps,
// the controller's handover path.
func TestTimingsSayWhereEachStallWent(t *testing.T) {
	m := migration(v1.PhasePending, time.Duration(0), v1.PhaseCompleted, 510*time.Millisecond)
	m.Status.Stalls = &v1.Stalls{CheckpointPause: &metav1.Duration{Duration: 40 * time.Millisecond}, Handover: &metav1.Duration{Duration: 8 * time.Millisecond}}
	steps := &v1.CheckpointSteps{Checkpoint: metav1.Duration{Duration: 50 * time.Millisecond}, ResumedAtThaw: true,
		Frozen: &metav1.Duration{Duration: 36 * time.Millisecond}, KubeletAfterThaw: &metav1.Duration{Duration: 2 * time.Millisecond}}
	report, err := json.Marshal(v1.AgentResult{Steps: steps})
	if err != nil {
		t.Fatal(err)
	}
	m.Annotations = map[string]string{v1.AnnotationAgentCheckpoint: string(report)}
	m.Status.Conditions = []metav1.Condition{{Type: v1.ConditionHandedOver, Status: metav1.ConditionTrue,
		Message: "target live at the fence map[0:9]; downtime 48.0ms (checkpoint pause 40.0ms + handover 8.0ms)" + v1.HandoverPathPrefix + "fence call 1.0ms, controller 0.1ms, handover call 6.0ms"}}
	got := Timings(m)
	for _, want := range []string{"container frozen 36.0ms; resumed at its thaw", "fence call 1.0ms, controller 0.1ms, handover call 6.0ms"} {
		if !strings.Contains(got, want) {
			t.Errorf("Timings lacks %q:\n%s", want, got)
		}
	}
}

func TestRequestObject(t *testing.T) {
	if m := (Request{Namespace: "shop", Pod: "orders-0"}).Object(); m.GenerateName != "orders-0-" || m.Name != "" {
		t.Errorf("unnamed request: name %q generateName %q, want generated from the pod", m.Name, m.GenerateName)
	}
	m := (Request{Namespace: "shop", Pod: "orders-0", Name: "friday", TargetNode: "node-b"}).Object()
	if m.Name != "friday" || m.GenerateName != "" || m.Spec.SourcePod != "orders-0" || m.Spec.TargetNode != "node-b" || m.Namespace != "shop" {
		t.Errorf("named request: %+v", m)
	}
}

// The last sample before the fence is written together with Finalizing:
// it is shown before Finalizing's line, as taken in Replaying, so time
// never runs backwards in the output.
func TestProgressShowsTheFinalSampleBeforeTheNextPhase(t *testing.T) {
	var p Progress
	m := migration(v1.PhasePending, time.Duration(0), v1.PhaseReplaying, 500*time.Millisecond)
	p.Observe(m)
	sampled := at(600 * time.Millisecond)
	m.Status.Replay = &v1.ReplayProgress{Replayed: 16, LastSampleTime: &sampled}
	m.Status.Phase = v1.PhaseFinalizing
	m.Status.PhaseTransitions = append(m.Status.PhaseTransitions, v1.PhaseTransition{Phase: v1.PhaseFinalizing, EnteredTime: at(700 * time.Millisecond)})
	got := texts(p.Observe(m))
	if len(got) != 2 || !strings.HasPrefix(got[0], "+600.0ms Replaying") || !strings.HasPrefix(got[1], "+700.0ms Finalizing") {
		t.Fatalf("lines %q; want the Replaying sample at +600ms, then Finalizing at +700ms", got)
	}
}
