package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/ms2m/ms2m/examples/statefulapp"
	"github.com/ms2m/ms2m/internal/example/deploy"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migrationclient"
	"github.com/ms2m/ms2m/pkg/replay"
)

// ReplicaOfThreeInput configures ReplicaOfThreeSpec.
type ReplicaOfThreeInput struct {
	SpecInput
	// StatefulSet runs the replicas as a StatefulSet, whose pod is migrated
	// with the Sequential strategy and keeps its name; otherwise a
	// Deployment's, migrated with the ShadowPod strategy.
	StatefulSet bool
}

// ReplicaOfThreeSpec: three replicas of the example consumer (one
// Deployment, or one StatefulSet) share one consumer group on a topic of
// six partitions, two each. One replica is migrated live under load. The
// migration completes and its checkpoint (O) and fence (F) cover exactly
// that replica's partitions; the target, a new pod of the same owner (of
// the same name, for a StatefulSet's), takes its place in the group with
// the same partitions; nothing is lost or processed twice live, and each
// replica's state is the fold of its own partitions, no partition's state
// held by two. The other two replicas are undisturbed: their group
// generation and partitions never change (no rebalance), no pause or fence
// reaches them, they stay live and keep delivering while the migration
// runs.
func ReplicaOfThreeSpec(in ReplicaOfThreeInput) features.Feature {
	kind, prefix := "Deployment, ShadowPod", "replicas"
	if in.StatefulSet {
		kind, prefix = "StatefulSet, Sequential", "replicas-sts"
	}
	return feature("live migration of one replica of three in a consumer group ("+kind+")", "the replica moves with its partitions, zero loss, the other two neither rebalanced nor paused", func(ctx context.Context, t *testing.T) {
		s := in.open(t, prefix, func(e *deploy.Example) { e.Replicas, e.Partitions, e.StatefulSet = 3, 6, in.StatefulSet })
		ds := deployConsumers(ctx, t, s.Cluster, s.NS, s.Example)
		s.startProducer(ctx)
		if err := deploy.WaitAppliedTotal(ctx, ds, in.Load.Count/3); err != nil {
			t.Fatal(err)
		}
		moved, others := ds[0], ds[1:]
		before := readSidecars(ctx, t, ds)
		st, err := statefulapp.FetchSummary(ctx, moved.URL())
		if err != nil {
			t.Fatal(err)
		}
		movedParts := slices.Sorted(maps.Keys(st.Positions))

		w := watchSidecars(others)
		m := s.migrateWithProgress(ctx, moved.Pod.Name)
		samples, err := w.stop()
		if err != nil {
			t.Fatalf("reading the other replicas' sidecars during the migration: %v", err)
		}
		if m.Status.Downtime == nil {
			t.Fatalf("migration %s reports no downtime", m.Name)
		}
		t.Logf("%s downtime: %s", m.Status.Strategy, migrationclient.DowntimeLine(&m.Status))
		for what, offsets := range map[string][]v1.PartitionOffset{"checkpoint (O)": m.Status.CheckpointOffsets, "fence (F)": m.Status.FenceOffsets} {
			if got := partitionsOf(offsets); !slices.Equal(got, movedParts) || len(got) != before[0].Partitions {
				t.Fatalf("%s on partitions %v; want exactly the moved replica's %v (%d assigned)", what, got, movedParts, before[0].Partitions)
			}
		}

		after, v := verifyReplicasZeroLoss(ctx, t, s.Cluster, s.NS, s.Example)
		assertReplicasAfter(ctx, t, m, ds, after, before, in.StatefulSet)
		for i, a := range after {
			if a.Pod.Name == m.Status.TargetPod && !slices.Equal(v.Replicas[i].Partitions, movedParts) {
				t.Fatalf("the target's state holds partitions %v; want the moved replica's %v", v.Replicas[i].Partitions, movedParts)
			}
		}
		assertPartitionsApart(t, v, 6)
		end := readSidecars(ctx, t, others)
		for i, o := range others {
			assertUndisturbed(t, o.Pod.Name, before[i+1], samples[i], end[i])
		}
	})
}

// readSidecars reads the replicas' sidecar metrics.
func readSidecars(ctx context.Context, t *testing.T, ds []deploy.Deployed) []deploy.Sidecar {
	t.Helper()
	out := make([]deploy.Sidecar, len(ds))
	for i, d := range ds {
		sc, err := d.Sidecar(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = sc
		t.Logf("replica %s on %s: %s", d.Pod.Name, d.Pod.Spec.NodeName, sc)
	}
	return out
}

// assertReplicasAfter: the consumer is now the two other replicas, the
// very same pods, and the migration's target: a new pod of the moved
// replica's owner on the target node, of the same name for a StatefulSet's
// (Sequential), of another for a Deployment's (ShadowPod), which joined the
// group at the same generation with the moved replica's partition count.
func assertReplicasAfter(ctx context.Context, t *testing.T, m *v1.StatefulMigration, before, after []deploy.Deployed, sidecars []deploy.Sidecar, statefulSet bool) {
	t.Helper()
	var target *deploy.Deployed
	kept := 0
	for i, a := range after {
		switch {
		case a.Pod.Name == m.Status.TargetPod:
			target = &after[i]
		case slices.ContainsFunc(before[1:], func(b deploy.Deployed) bool { return b.Pod.UID == a.Pod.UID }):
			kept++
		}
	}
	if target == nil || kept != 2 || len(after) != 3 {
		t.Fatalf("consumer pods after the migration %v; want the target %s and the two other replicas", names(after), m.Status.TargetPod)
	}
	src, p := before[0].Pod, target.Pod
	ref, srcRef := metav1.GetControllerOf(p), metav1.GetControllerOf(src)
	strategy, sameName := v1.StrategyShadowPod, false
	if statefulSet {
		strategy, sameName = v1.StrategySequential, true
	}
	switch {
	case m.Status.Strategy != strategy || (p.Name == src.Name) != sameName:
		t.Fatalf("strategy %s, target %s; want %s, the source's name %s kept: %t", m.Status.Strategy, p.Name, strategy, src.Name, sameName)
	case p.UID == src.UID || m.Status.SourceUID != src.UID:
		t.Fatalf("target %s has uid %s, the migration's source uid %s; want a new pod in place of %s (uid %s)", p.Name, p.UID, m.Status.SourceUID, src.Name, src.UID)
	case p.Spec.NodeName != m.Status.TargetNode || p.Spec.NodeName == src.Spec.NodeName:
		t.Fatalf("target on %s; want the target node %s (the source was on %s)", p.Spec.NodeName, m.Status.TargetNode, src.Spec.NodeName)
	case ref == nil || srcRef == nil || ref.UID != srcRef.UID:
		t.Fatalf("target owner %v; want the source's %v", ref, srcRef)
	}
	ts, err := target.Sidecar(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("target %s on %s: %s", target.Pod.Name, target.Pod.Spec.NodeName, ts)
	if ts.Mode != string(replay.ModeLive) || ts.Partitions != sidecars[0].Partitions || ts.Generation != sidecars[0].Generation {
		t.Fatalf("target sidecar %s; want live with the source's %d partitions at its generation %d", ts, sidecars[0].Partitions, sidecars[0].Generation)
	}
}

// assertPartitionsApart: every one of the topic's partitions is in the
// state of exactly one replica.
func assertPartitionsApart(t *testing.T, v statefulapp.Verdict, partitions int) {
	t.Helper()
	held := map[int]int{}
	for _, r := range v.Replicas {
		for _, p := range r.Partitions {
			held[p]++
		}
	}
	for p := range partitions {
		if held[p] != 1 {
			t.Fatalf("partition %d is in the state of %d replicas, want 1 (replicas' partitions: %+v)", p, held[p], v.Replicas)
		}
	}
}

// assertUndisturbed: a replica's sidecar, sampled while the migration ran
// and again at the end, kept its generation and partitions, served no
// pause or fence, stayed live, and delivered messages while the migration
// ran.
func assertUndisturbed(t *testing.T, pod string, before deploy.Sidecar, during []deploy.Sidecar, end deploy.Sidecar) {
	t.Helper()
	if len(during) < 2 {
		t.Fatalf("replica %s: %d samples during the migration, want at least 2", pod, len(during))
	}
	for _, s := range append(slices.Clone(during), end) {
		if s.Generation != before.Generation || s.Partitions != before.Partitions {
			t.Fatalf("replica %s was rebalanced: generation %d, %d partitions before the migration; %d, %d during it", pod,
				before.Generation, before.Partitions, s.Generation, s.Partitions)
		}
		if s.Pauses != before.Pauses || s.Fences != before.Fences || s.Mode != string(replay.ModeLive) {
			t.Fatalf("replica %s was paused: %s, pauses %d→%d, fences %d→%d", pod, s.Mode, before.Pauses, s.Pauses, before.Fences, s.Fences)
		}
	}
	first, last := during[0], during[len(during)-1]
	if last.Delivered <= first.Delivered {
		t.Fatalf("replica %s delivered nothing while the migration ran (%d then %d)", pod, first.Delivered, last.Delivered)
	}
	t.Logf("replica %s undisturbed: generation %d and %d partitions unchanged, live in all %d samples, %d messages delivered during the migration",
		pod, before.Generation, before.Partitions, len(during), last.Delivered-first.Delivered)
}

// sidecarWatch samples replicas' sidecars every 100 ms until stopped.
type sidecarWatch struct {
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	samples [][]deploy.Sidecar
	err     error
}

func watchSidecars(ds []deploy.Deployed) *sidecarWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &sidecarWatch{cancel: cancel, done: make(chan struct{}), samples: make([][]deploy.Sidecar, len(ds))}
	sample := func() {
		for i, d := range ds {
			rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
			s, err := d.Sidecar(rctx)
			rcancel()
			w.mu.Lock()
			switch {
			case ctx.Err() != nil:
			case err != nil && w.err == nil:
				w.err = fmt.Errorf("%s: %w", d.Pod.Name, err)
			case err == nil:
				w.samples[i] = append(w.samples[i], s)
			}
			w.mu.Unlock()
		}
	}
	sample()
	go func() {
		defer close(w.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				sample()
			}
		}
	}()
	return w
}

// stop ends the watch and returns the samples per replica and the first
// read that failed.
func (w *sidecarWatch) stop() ([][]deploy.Sidecar, error) {
	w.cancel()
	<-w.done
	return w.samples, w.err
}

// partitionsOf lists the partitions of offsets, sorted.
func partitionsOf(offsets []v1.PartitionOffset) []int {
	out := make([]int, 0, len(offsets))
	for _, o := range offsets {
		out = append(out, int(o.Partition))
	}
	slices.Sort(out)
	return out
}

func names(ds []deploy.Deployed) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Pod.Name
	}
	return out
}
