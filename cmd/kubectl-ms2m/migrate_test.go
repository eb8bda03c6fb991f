package main

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/internal/expect"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

func TestMigrateCreatesTheStatefulMigration(t *testing.T) {
	ns := namespace(t)
	newPod(t, ns, "orders-0")
	for _, tc := range []struct {
		name           string
		args           []string
		wantName       string // empty: generated
		wantTargetNode string
	}{
		{name: "to a node, named", args: []string{"--to", "node-b", "--name", "orders-friday"}, wantName: "orders-friday", wantTargetNode: "node-b"},
		{name: "node chosen by the controller, generated name", args: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := migrations(t, ns)
			out, stderr, code := kms2m(t, append([]string{"migrate", "orders-0", "-n", ns}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d\n%s%s", code, out, stderr)
			}
			after := migrations(t, ns)
			if len(after) != len(before)+1 {
				t.Fatalf("%d migrations after, %d before: want one more", len(after), len(before))
			}
			var m *v1.StatefulMigration
			for name := range after {
				if _, old := before[name]; !old {
					created := after[name]
					m = &created
				}
			}
			if tc.wantName != "" && m.Name != tc.wantName {
				t.Errorf("name %q, want %q", m.Name, tc.wantName)
			}
			if tc.wantName == "" && !strings.HasPrefix(m.Name, "orders-0-") {
				t.Errorf("generated name %q does not start with the pod's name", m.Name)
			}
			if m.Spec.SourcePod != "orders-0" || m.Spec.TargetNode != tc.wantTargetNode {
				t.Errorf("spec: source pod %q target node %q, want orders-0 and %q", m.Spec.SourcePod, m.Spec.TargetNode, tc.wantTargetNode)
			}
			expectContains(t, "migrate output", out, "statefulmigration/"+m.Name+" created: pod orders-0 →", "kubectl ms2m status "+m.Name)
		})
	}
}

func TestMigrateRefusesAMissingPod(t *testing.T) {
	ns := namespace(t)
	out, stderr, code := kms2m(t, "migrate", "ghost", "--wait", "-n", ns)
	if code == 0 {
		t.Fatalf("exit 0 for a pod that does not exist\n%s", out)
	}
	expectContains(t, "stderr", stderr, `error: pod "ghost" not found in namespace "`+ns+`": nothing to migrate`)
	if n := len(migrations(t, ns)); n != 0 {
		t.Errorf("%d StatefulMigrations created for a missing pod", n)
	}
}

// TestMigrateWaitFollowsEachStatusUpdate writes the status the controller
// would, one update at a time, and checks that each is on screen before
// the next is written: the progress is live, not a report at the end.
func TestMigrateWaitFollowsEachStatusUpdate(t *testing.T) {
	ns := namespace(t)
	newPod(t, ns, "orders-0")
	p := start(t, "migrate", "orders-0", "--to", "node-b", "--name", "orders-move", "--wait", "-n", ns)
	key := client.ObjectKey{Namespace: ns, Name: "orders-move"}
	p.expectOutput(t, "statefulmigration/orders-move created: pod orders-0 → node node-b")

	sample := func(d time.Duration, lag, replayed int64) func(*v1.StatefulMigrationStatus) {
		return func(st *v1.StatefulMigrationStatus) {
			ts := metav1.NewMicroTime(t0.Add(d))
			st.Replay = &v1.ReplayProgress{Lag: lag, Replayed: replayed, ReplayRatePerSecond: 900, ArrivalRatePerSecond: 300, LastSampleTime: &ts}
		}
	}
	for _, step := range []struct {
		change func(*v1.StatefulMigrationStatus)
		want   string
	}{
		{func(st *v1.StatefulMigrationStatus) { enter(st, v1.PhasePending, 0) }, "+0.0ms Pending validating pod orders-0"},
		{func(st *v1.StatefulMigrationStatus) {
			st.SourceNode, st.TargetNode = "node-a", "node-b"
			enter(st, v1.PhaseCheckpointing, 120*time.Millisecond)
		}, "+120.0ms Checkpointing pausing orders-0 on node-a to checkpoint it; target node-b"},
		{func(st *v1.StatefulMigrationStatus) { enter(st, v1.PhaseTransferring, 400*time.Millisecond) }, "+400.0ms Transferring pushing the checkpoint image"},
		{func(st *v1.StatefulMigrationStatus) { enter(st, v1.PhaseRestoring, 900*time.Millisecond) }, "+900.0ms Restoring restoring the target pod on node-b"},
		{func(st *v1.StatefulMigrationStatus) { enter(st, v1.PhaseReplaying, 1500*time.Millisecond) }, "+1.500s Replaying the target replays"},
		{sample(2*time.Second, 600, 1200), "+2.000s Replaying lag 600, μ 900/s, λ 300/s, 1200 replayed, caught up in ~1.000s"},
		{sample(2500*time.Millisecond, 30, 2370), "+2.500s Replaying lag 30, μ 900/s, λ 300/s, 2370 replayed"},
		{func(st *v1.StatefulMigrationStatus) {
			enter(st, v1.PhaseFinalizing, 2600*time.Millisecond)
			st.FenceOffsets = []v1.PartitionOffset{{Topic: "orders", Partition: 0, Offset: 2400}}
		}, "+2.600s Finalizing source fenced"},
		{func(st *v1.StatefulMigrationStatus) {
			sample(2700*time.Millisecond, 0, 2400)(st)
			st.Downtime = &metav1.Duration{Duration: 41 * time.Millisecond}
			condition(st, v1.ConditionHandedOver, true, v1.ReasonSucceeded, "target live from the fence offsets")
			st.TargetLiveOffsets = []v1.PartitionOffset{{Topic: "orders", Partition: 0, Offset: 2400}}
			enter(st, v1.PhaseCompleted, 3*time.Second)
		}, "Completed in 3.000s: downtime 41.0ms, 2400 messages replayed, handed over at the fence 0@2400: the source stopped there and the target went live from exactly there"},
	} {
		setStatus(t, key, step.change)
		p.expectOutput(t, step.want)
	}
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d after Completed\n%s", code, p.err.String())
	}
	// Not a terminal: one line per change, no redrawing.
	if strings.Contains(p.out.String(), "\r") {
		t.Errorf("output to a pipe redraws lines:\n%q", p.out.String())
	}
}

func TestMigrateWaitExitsNonzeroOnFailureWithTheReason(t *testing.T) {
	ns := namespace(t)
	newPod(t, ns, "orders-0")
	p := start(t, "migrate", "orders-0", "--name", "orders-move", "--wait", "-n", ns)
	key := client.ObjectKey{Namespace: ns, Name: "orders-move"}
	expect.Eventually(t, "the StatefulMigration exists", func() error {
		return env.Client.Get(context.Background(), key, &v1.StatefulMigration{})
	})
	setStatus(t, key, func(st *v1.StatefulMigrationStatus) {
		enter(st, v1.PhasePending, 0)
		st.SourceNode, st.TargetNode = "node-a", "node-c"
		enter(st, v1.PhaseCheckpointing, 50*time.Millisecond)
	})
	p.expectOutput(t, "+50.0ms Checkpointing pausing orders-0 on node-a to checkpoint it; target node-c")
	setStatus(t, key, func(st *v1.StatefulMigrationStatus) {
		st.FailureReason = "checkpointing orders-0: criu dump: permission denied"
		condition(st, v1.ConditionReady, false, v1.ReasonCheckpointFailed, st.FailureReason)
		condition(st, v1.ConditionRolledBack, true, v1.ReasonCheckpointFailed, "the source serves again")
		enter(st, v1.PhaseFailed, 1200*time.Millisecond)
	})
	if code := p.wait(t); code != 1 {
		t.Fatalf("exit %d after Failed, want 1", code)
	}
	expectContains(t, "stdout", p.out.String(),
		"Failed after 1.200s: CheckpointFailed: checkpointing orders-0: criu dump: permission denied; rolled back: the source serves again")
	expectContains(t, "stderr", p.err.String(), "error: StatefulMigration orders-move failed: checkpointing orders-0: criu dump: permission denied")
}

func TestMigrateWaitEnds(t *testing.T) {
	t.Run("when the migration is deleted", func(t *testing.T) {
		ns := namespace(t)
		newPod(t, ns, "orders-0")
		p := start(t, "migrate", "orders-0", "--name", "orders-move", "--wait", "-n", ns)
		key := client.ObjectKey{Namespace: ns, Name: "orders-move"}
		m := &v1.StatefulMigration{}
		expect.Eventually(t, "the StatefulMigration exists", func() error { return env.Client.Get(context.Background(), key, m) })
		setStatus(t, key, func(st *v1.StatefulMigrationStatus) { enter(st, v1.PhasePending, 0) })
		p.expectOutput(t, "Pending")
		if err := env.Client.Delete(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		if code := p.wait(t); code != 1 {
			t.Fatalf("exit %d after deletion, want 1", code)
		}
		expectContains(t, "stderr", p.err.String(), "StatefulMigration orders-move was deleted while Pending: the controller rolls back")
	})
	t.Run("at --timeout, saying the migration goes on", func(t *testing.T) {
		ns := namespace(t)
		newPod(t, ns, "orders-0")
		_, stderr, code := kms2m(t, "migrate", "orders-0", "--name", "orders-move", "--wait", "--timeout", "300ms", "-n", ns)
		if code != 1 {
			t.Fatalf("exit %d at the timeout, want 1", code)
		}
		expectContains(t, "stderr", stderr, "StatefulMigration orders-move is still not yet picked up by the controller after 300ms; it goes on")
	})
}

// migrations lists the StatefulMigrations in ns by name.
func migrations(t *testing.T, ns string) map[string]v1.StatefulMigration {
	t.Helper()
	list := &v1.StatefulMigrationList{}
	if err := env.Client.List(context.Background(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	out := map[string]v1.StatefulMigration{}
	for _, m := range list.Items {
		out[m.Name] = m
	}
	return out
}
