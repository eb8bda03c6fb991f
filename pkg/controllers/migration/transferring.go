package migration

import (
	"context"
	"fmt"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// transferring waits for the agent to push the checkpoint image.
func transferring(ctx context.Context, w *work) (outcome, error) {
	if o, pushed, err := w.imagePushed(); !pushed {
		return o, err
	}
	return w.next(fmt.Sprintf("restoring on %s from %s", w.m.Status.TargetNode, w.m.Status.CheckpointImage)), nil
}

// transferringThenFence is Transferring for Sequential: once the image is
// pushed, the source stops live processing at the fence F (downtime
// starts), so that it can be released and its StatefulSet recreate the
// pod, which the webhook turns into the restored one. Fencing is
// idempotent: a repeat returns the same F.
func transferringThenFence(ctx context.Context, w *work) (outcome, error) {
	if o, pushed, err := w.imagePushed(); !pushed {
		return o, err
	}
	m := w.m
	src, o, err := w.sourceStill(ctx, "before the fence")
	if src == nil {
		return o, err
	}
	if o, fenced, err := w.fence(ctx, src); !fenced {
		return o, err
	}
	return w.next(fmt.Sprintf("source fenced at %v; releasing %s so its StatefulSet recreates it on %s from %s",
		fromOffsets(m.Status.FenceOffsets), src.Name, m.Status.TargetNode, m.Status.CheckpointImage)), nil
}

// imagePushed records the agent's pushed image; until then (or on the
// agent's failure, or the phase's timeout) it returns the phase's outcome.
func (w *work) imagePushed() (outcome, bool, error) {
	m := w.m
	if o, late := w.timedOut(); late {
		return o, false, nil
	}
	res, err := v1.AgentResultOf(m, v1.AnnotationAgentImage)
	if err != nil {
		return outcome{}, false, err
	}
	if res == nil {
		o, _ := after(w.remaining())
		return o, false, nil
	}
	if res.Error != "" {
		o, _ := fail(v1.ReasonPushFailed, "checkpoint image on node %s: %s", res.Node, res.Error)
		return o, false, nil
	}
	if m.Status.CheckpointImage != res.Image && w.r.Metrics != nil {
		w.r.Metrics.CheckpointBytes.Observe(float64(res.SizeBytes))
	}
	m.Status.CheckpointImage, m.Status.CheckpointSizeBytes = res.Image, res.SizeBytes
	setCondition(&m.Status, m.Generation, v1.ConditionImagePushed, true, v1.ReasonSucceeded, res.Image)
	return outcome{}, true, nil
}
