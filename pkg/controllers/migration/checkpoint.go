package migration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/replay"
)

// sidecarAddr is the control endpoint of a pod's replay sidecar.
func (w *work) sidecarAddr(podIP string, pod interface{ GetName() string }) string {
	return replay.Addr(podIP, w.r.Opts.SidecarControlPort)
}

// agentResult reads the agent's report in annotation key (nil: none yet).
func agentResult(m *v1.StatefulMigration, key string) (*v1.AgentResult, error) {
	raw, ok := m.Annotations[key]
	if !ok {
		return nil, nil
	}
	var r v1.AgentResult
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return nil, fmt.Errorf("annotation %s: %w", key, err)
	}
	return &r, nil
}

// binding is where the source's messages come from: the spec's override,
// else the pod's annotations.
func (w *work) binding(src *corev1.Pod) Binding {
	b := Binding{Topic: w.topic(), Group: src.Annotations[v1.AnnotationKafkaGroup]}
	for _, s := range strings.Split(src.Annotations[v1.AnnotationKafkaBrokers], ",") {
		if s = strings.TrimSpace(s); s != "" {
			b.Brokers = append(b.Brokers, s)
		}
	}
	if q := w.m.Spec.MessageQueueConfig; q != nil {
		if len(q.Brokers) > 0 {
			b.Brokers = b.Brokers[:0]
			for _, x := range q.Brokers {
				b.Brokers = append(b.Brokers, string(x))
			}
		}
		if q.ConsumerGroup != "" {
			b.Group = q.ConsumerGroup
		}
	}
	return b
}

func (w *work) topic() string {
	if q := w.m.Spec.MessageQueueConfig; q != nil && q.Topic != "" {
		return q.Topic
	}
	if w.source != nil {
		return w.source.Annotations[v1.AnnotationKafkaTopic]
	}
	return ""
}

// checkpointing pauses the source's sidecar and records the offsets O the
// app's memory is exact to; the node agent then checkpoints the app
// container through its kubelet; the sidecar resumes. The source is paused
// only for as long as the checkpoint takes.
func checkpointing(ctx context.Context, w *work) (outcome, error) {
	m := w.m
	limit, _, _, _ := w.timeouts()
	if o, late := w.timedOut(limit); late {
		return o, nil
	}
	src, err := w.sourcePod(ctx)
	if apierrors.IsNotFound(err) {
		return fail(v1.ReasonSourcePodNotFound, "source pod %s disappeared", m.Spec.SourcePod)
	}
	if err != nil {
		return outcome{}, err
	}
	addr := w.sidecarAddr(src.Status.PodIP, src)
	if len(m.Status.CheckpointOffsets) == 0 {
		pos, err := w.r.Sidecars.Pause(ctx, addr)
		if err != nil {
			return sidecarFailed(ctx, err, v1.ReasonCheckpointFailed, "pausing the source's sidecar")
		}
		next, err := w.r.Offsets.Complete(ctx, w.binding(src), pos.Next)
		if err != nil {
			return fail(v1.ReasonCheckpointFailed, "the checkpoint offsets: %v", err)
		}
		if len(next) == 0 {
			// Nothing to record yet (the topic does not exist): serve on
			// and try again rather than checkpoint an unknown position.
			if _, err := w.r.Sidecars.Resume(ctx, addr); err != nil {
				return sidecarFailed(ctx, err, v1.ReasonCheckpointFailed, "resuming the source's sidecar")
			}
			return after(time.Second)
		}
		m.Status.CheckpointOffsets = toOffsets(w.topic(), next)
		// The agent acts on the recorded offsets: the deferred status
		// patch publishes them; its report comes back as an annotation.
		return wait()
	}
	res, err := agentResult(m, v1.AnnotationAgentCheckpoint)
	if err != nil {
		return outcome{}, err
	}
	if res == nil {
		return after(w.remaining(limit))
	}
	if res.Error != "" {
		return fail(v1.ReasonCheckpointFailed, "checkpoint on node %s: %s", res.Node, res.Error)
	}
	if _, err := w.r.Sidecars.Resume(ctx, addr); err != nil {
		return sidecarFailed(ctx, err, v1.ReasonCheckpointFailed, "resuming the source's sidecar after the checkpoint")
	}
	if pause := w.r.Clock.Since(enteredAt(&m.Status, v1.PhaseCheckpointing)); w.r.Metrics != nil {
		w.r.Metrics.PauseSeconds.Observe(pause.Seconds())
	}
	m.Status.CheckpointID = res.Archive
	setCondition(&m.Status, m.Generation, v1.ConditionCheckpointed, true, v1.ReasonSucceeded,
		fmt.Sprintf("checkpointed at offsets %v; the source serves again", fromOffsets(m.Status.CheckpointOffsets)))
	return w.advance(v1.PhaseTransferring, "Transferring", "the node agent packs and pushes the checkpoint image"), nil
}

// transferring waits for the agent to push the checkpoint image.
func transferring(ctx context.Context, w *work) (outcome, error) {
	m := w.m
	_, limit, _, _ := w.timeouts()
	if o, late := w.timedOut(limit); late {
		return o, nil
	}
	res, err := agentResult(m, v1.AnnotationAgentImage)
	if err != nil {
		return outcome{}, err
	}
	if res == nil {
		return after(w.remaining(limit))
	}
	if res.Error != "" {
		return fail(v1.ReasonPushFailed, "checkpoint image on node %s: %s", res.Node, res.Error)
	}
	m.Status.CheckpointImage, m.Status.CheckpointSizeBytes = res.Image, res.SizeBytes
	if w.r.Metrics != nil {
		w.r.Metrics.CheckpointBytes.Observe(float64(res.SizeBytes))
	}
	setCondition(&m.Status, m.Generation, v1.ConditionImagePushed, true, v1.ReasonSucceeded, res.Image)
	if m.Status.Strategy == v1.StrategySequential {
		return fenceForRelease(ctx, w)
	}
	return w.advance(v1.PhaseRestoring, "Restoring", fmt.Sprintf("restoring on %s from %s", m.Status.TargetNode, res.Image)), nil
}
