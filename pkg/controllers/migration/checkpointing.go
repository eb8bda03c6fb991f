package migration

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migratable"
)

// checkpointing pauses the source's sidecar and records the offsets O the
// app's memory is exact to; the node agent then checkpoints the app
// container through its kubelet; the sidecar resumes. The source is paused
// only for as long as the checkpoint takes.
func checkpointing(ctx context.Context, w *work) (outcome, error) {
	m := w.m
	if o, late := w.timedOut(); late {
		return o, nil
	}
	src, o, err := w.sourceStill(ctx, "during the checkpoint")
	if src == nil {
		return o, err
	}
	addr := w.sidecarAddr(src)
	if len(m.Status.CheckpointOffsets) == 0 {
		b, errs := migratable.Resolve(m, src)
		if len(errs) > 0 {
			return fail(v1.ReasonInvalidKafkaBinding, "source pod's Kafka binding: %s", errs.ToAggregate())
		}
		pos, err := w.r.Sidecars.Pause(ctx, addr)
		if err != nil {
			return sidecarFailed(ctx, err, v1.ReasonCheckpointFailed, "pausing the source's sidecar")
		}
		next, err := w.r.Offsets.Complete(ctx, b, pos.Next)
		if err != nil {
			return fail(v1.ReasonCheckpointFailed, "the checkpoint offsets: %v", err)
		}
		if pos.Assigned != nil {
			// One replica of a group of several: O covers its partitions,
			// not the other replicas'.
			next = only(next, pos.Assigned)
		}
		if len(next) == 0 {
			// Nothing to record yet (the topic does not exist): serve on
			// and try again rather than checkpoint an unknown position.
			if _, err := w.r.Sidecars.Resume(ctx, addr); err != nil {
				return sidecarFailed(ctx, err, v1.ReasonCheckpointFailed, "resuming the source's sidecar")
			}
			return after(time.Second)
		}
		m.Status.CheckpointOffsets = toOffsets(b.Topic, next)
		// The agent acts on the recorded offsets: the deferred status
		// patch publishes them; its report comes back as an annotation.
		return wait()
	}
	res, err := agentResult(m, v1.AnnotationAgentCheckpoint)
	if err != nil {
		return outcome{}, err
	}
	if res == nil {
		return after(w.remaining())
	}
	if res.Error != "" {
		return fail(v1.ReasonCheckpointFailed, "checkpoint on node %s: %s", res.Node, res.Error)
	}
	resumed, err := w.r.Sidecars.Resume(ctx, addr)
	if err != nil {
		return sidecarFailed(ctx, err, v1.ReasonCheckpointFailed, "resuming the source's sidecar after the checkpoint")
	}
	pause, measured := stall(resumed.PausedAt, resumed.ResumedAt, enteredAt(&m.Status, v1.PhaseCheckpointing), w.r.Clock.Now())
	w.recordStall(func(s *v1.Stalls) { s.CheckpointPause = &metav1.Duration{Duration: pause} }, measured)
	if w.r.Metrics != nil {
		w.r.Metrics.PauseSeconds.Observe(pause.Seconds())
	}
	m.Status.CheckpointID = res.Archive
	setCondition(&m.Status, m.Generation, v1.ConditionCheckpointed, true, v1.ReasonSucceeded,
		fmt.Sprintf("checkpointed at offsets %v; the source serves again", fromOffsets(m.Status.CheckpointOffsets)))
	return w.next("the node agent packs and pushes the checkpoint image"), nil
}
