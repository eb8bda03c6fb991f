package e2e

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/ms2m/ms2m/examples/statefulapp"
	"github.com/ms2m/ms2m/internal/example/deploy"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migrationclient"
)

// StopAndCopySpec: the MS2M papers' baseline, strategy StopAndCopy, under
// a steady producer. The source stops at its checkpoint (the fence is O)
// and stays stopped while the image is pushed and restored, so the target
// has nothing to replay; nothing is lost or processed twice live; and the
// downtime it reports holds the transfer and the restore.
func StopAndCopySpec(in SpecInput) features.Feature {
	return feature("stop-and-copy migration of a bare pod under load", "the source stops at its checkpoint, the target replays nothing, zero loss", func(ctx context.Context, t *testing.T) {
		s := in.open(t, "stop-copy", func(e *deploy.Example) { e.Bare = true })
		d := s.deploy(ctx, in.Load.Count/3)
		m := s.completed(s.migrate(ctx, "stop-and-copy", d.Pod.Name, v1.StatefulMigrationSpec{Strategy: v1.StrategyStopAndCopy}))
		t.Logf("stop-and-copy:\n%s", deploy.Timings(m))
		if m.Status.Strategy != v1.StrategyStopAndCopy || len(m.Status.FenceOffsets) == 0 || !equality.Semantic.DeepEqual(m.Status.FenceOffsets, m.Status.CheckpointOffsets) {
			t.Fatalf("strategy %s, fence %v, checkpoint offsets %v; want StopAndCopy fenced where it checkpointed", m.Status.Strategy, m.Status.FenceOffsets, m.Status.CheckpointOffsets)
		}
		var stopped time.Duration
		for _, p := range migrationclient.PhaseSpans(&m.Status, time.Time{}) {
			if p.Phase == v1.PhaseTransferring || p.Phase == v1.PhaseRestoring {
				stopped += p.Duration
			}
		}
		if m.Status.Downtime == nil || m.Status.Downtime.Duration < stopped {
			t.Fatalf("downtime %v; want at least Transferring and Restoring (%s), which the source spent stopped", m.Status.Downtime, stopped)
		}
		after := s.verifyZeroLoss(ctx)
		sum, err := statefulapp.FetchSummary(ctx, ConsumerURL(after.Pod))
		if err != nil {
			t.Fatal(err)
		}
		if after.Pod.Name != m.Status.TargetPod || sum.Replayed != 0 || !sum.Restored {
			t.Fatalf("consumer %s (target %s): restored %v, %d messages replayed; want the restored target, which had nothing to replay",
				after.Pod.Name, m.Status.TargetPod, sum.Restored, sum.Replayed)
		}
	})
}
