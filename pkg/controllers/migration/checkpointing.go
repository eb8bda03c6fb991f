package migration

import (
	"context"
	"fmt"

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
	m := w.m
	if o, late := w.timedOut(); late {
		return o, nil
	}
	src, o, err := w.sourceStill(ctx, "during the checkpoint")
	if src == nil {
		return o, err
	}
	b, errs := migratable.Resolve(m, src)
	if len(errs) > 0 {
		return fail(v1.ReasonInvalidKafkaBinding, "source pod's Kafka binding: %s", errs.ToAggregate())
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
	offsets := res.Offsets
	if res.Assigned != nil {
		// One replica of a group of several: O covers its partitions,
		// not the other replicas'.
		offsets = only(offsets, res.Assigned)
	}
	if len(offsets) == 0 {
		return fail(v1.ReasonCheckpointFailed, "the agent on node %s checkpointed, but reported no offsets to replay from", res.Node)
	}
	m.Status.CheckpointOffsets = toOffsets(b.Topic, offsets)
	pause, measured := stall(timeOf(res.PausedAt), timeOf(res.ResumedAt), enteredAt(&m.Status, v1.PhaseCheckpointing), w.r.Clock.Now())
	w.recordStall(func(s *v1.Stalls) { s.CheckpointPause = &metav1.Duration{Duration: pause} }, measured)
	if w.r.Metrics != nil {
		w.r.Metrics.PauseSeconds.Observe(pause.Seconds())
	}
	m.Status.CheckpointID = res.Archive
	setCondition(&m.Status, m.Generation, v1.ConditionCheckpointed, true, v1.ReasonSucceeded,
		fmt.Sprintf("checkpointed at offsets %v; the source was paused for %s and serves again", offsets, v1.FormatDuration(pause)))
	return w.next("the node agent packs and pushes the checkpoint image"), nil
}
