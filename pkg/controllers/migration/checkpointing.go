package migration

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migratable"
)

// checkpointing waits for the source node's agent, which pauses the
// source's sidecar, checkpoints the app container through its kubelet and
// resumes the sidecar the moment the kubelet answers: the source is paused
// for the checkpoint only, with no status write, watch or controller round
// trip inside the pause. The agent reports the archive and O, the offsets
// the paused sidecar answered (its memory is exact to them), which are
// recorded here.
func checkpointing(ctx context.Context, w *work) (outcome, error) {
	res, _, o, done, err := w.checkpointed(ctx)
	if !done {
		return o, err
	}
	pause := w.pauseStall(timeOf(res.PausedAt), timeOf(res.ResumedAt))
	steps := ""
	if res.Steps != nil {
		steps = " (" + res.Steps.String() + ")"
	}
	setCondition(&w.m.Status, w.m.Generation, v1.ConditionCheckpointed, true, v1.ReasonSucceeded,
		fmt.Sprintf("checkpointed at offsets %v; the source was paused for %s%s and serves again", fromOffsets(w.m.Status.CheckpointOffsets), v1.FormatDuration(pause), steps))
	return w.next("the node agent packs and pushes the checkpoint image"), nil
}

// checkpointingThenFence is Checkpointing for StopAndCopy: the agent left
// the source paused after the checkpoint, and it is fenced where it
// paused (F = O), to stay stopped until the target is live. Its pause is
// the stall up to the fence; the handover stall runs from there.
func checkpointingThenFence(ctx context.Context, w *work) (outcome, error) {
	res, src, o, done, err := w.checkpointed(ctx)
	if !done {
		return o, err
	}
	if o, fenced, err := w.fence(ctx, src); !fenced {
		return o, err
	}
	pause := w.pauseStall(timeOf(res.PausedAt), timeOf(w.m.Status.FenceTime))
	setCondition(&w.m.Status, w.m.Generation, v1.ConditionCheckpointed, true, v1.ReasonSucceeded,
		fmt.Sprintf("checkpointed at offsets %v; the source, paused for it, was fenced there after %s and stays stopped until the target is live",
			fromOffsets(w.m.Status.CheckpointOffsets), v1.FormatDuration(pause)))
	return w.next("the node agent packs and pushes the checkpoint image while the source stays stopped"), nil
}

// checkpointed records the node agent's checkpoint: the archive and O.
// done is false, with the phase's outcome, until the agent reported it.
func (w *work) checkpointed(ctx context.Context) (*v1.AgentResult, *corev1.Pod, outcome, bool, error) {
	m := w.m
	if o, late := w.timedOut(); late {
		return nil, nil, o, false, nil
	}
	src, o, err := w.sourceStill(ctx, "during the checkpoint")
	if src == nil {
		return nil, nil, o, false, err
	}
	b, errs := migratable.Resolve(m, src)
	if len(errs) > 0 {
		o, _ := fail(v1.ReasonInvalidKafkaBinding, "source pod's Kafka binding: %s", errs.ToAggregate())
		return nil, nil, o, false, nil
	}
	res, err := v1.AgentResultOf(m, v1.AnnotationAgentCheckpoint)
	if err != nil {
		return nil, nil, outcome{}, false, err
	}
	if res == nil {
		o, _ := after(w.remaining())
		return nil, nil, o, false, nil
	}
	if res.Error != "" {
		o, _ := fail(v1.ReasonCheckpointFailed, "checkpoint on node %s: %s", res.Node, res.Error)
		return nil, nil, o, false, nil
	}
	offsets := res.Offsets
	if res.Assigned != nil {
		// One replica of a group of several: O covers its partitions,
		// not the other replicas'.
		offsets = only(offsets, res.Assigned)
	}
	if len(offsets) == 0 {
		o, _ := fail(v1.ReasonCheckpointFailed, "the agent on node %s checkpointed, but reported no offsets to replay from", res.Node)
		return nil, nil, o, false, nil
	}
	m.Status.CheckpointOffsets = toOffsets(b.Topic, offsets)
	m.Status.CheckpointID = res.Archive
	return res, src, outcome{}, true, nil
}

// pauseStall records the checkpoint pause, from and to as the source's
// sidecar timed them or else from the phase's start.
func (w *work) pauseStall(from, to *time.Time) time.Duration {
	pause, measured := stall(from, to, enteredAt(&w.m.Status, v1.PhaseCheckpointing), w.r.Clock.Now())
	w.recordStall(func(s *v1.Stalls) { s.CheckpointPause = &metav1.Duration{Duration: pause} }, measured)
	if w.r.Metrics != nil {
		w.r.Metrics.PauseSeconds.Observe(pause.Seconds())
	}
	return pause
}
