package main

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migrationclient"
)

// ms2m moves the consumer the project's way: a StatefulMigration to the
// target node, with the benchmark's replay cutoff, followed by watch until
// Completed.
var ms2m = method{Name: "ms2m", Move: func(ctx context.Context, t *trial, src *corev1.Pod, target string) (moved, error) {
	return migrate(ctx, t, src, target, v1.StrategyShadowPod, t.b.opts.ReplayCutoff)
}}

// The cutoff regime: MS2M on a consumer whose replay is slower than its
// live work (--regime-replay-process-time), at rates where the replay
// cannot catch up (μ ≤ λ), once with the default replay cutoff and once
// with the short one (--cutoff-regime): the threshold rule then ends the
// replay at the cutoff and the handover drains the rest.
var (
	regime = method{Name: "regime", SlowReplay: true, Move: func(ctx context.Context, t *trial, src *corev1.Pod, target string) (moved, error) {
		return migrate(ctx, t, src, target, v1.StrategyShadowPod, t.b.opts.ReplayCutoff)
	}}
	regimeCutoff = method{Name: "regime-cutoff", SlowReplay: true, Move: func(ctx context.Context, t *trial, src *corev1.Pod, target string) (moved, error) {
		return migrate(ctx, t, src, target, v1.StrategyShadowPod, t.b.opts.CutoffRegime)
	}}
)

// stopAndCopy is the MS2M papers' baseline on the same checkpoint, image
// and restore path: a StatefulMigration with strategy StopAndCopy, whose
// source stays stopped from its checkpoint until the target is live.
var stopAndCopy = method{Name: "stop-and-copy", Move: func(ctx context.Context, t *trial, src *corev1.Pod, target string) (moved, error) {
	return migrate(ctx, t, src, target, v1.StrategyStopAndCopy, t.b.opts.ReplayCutoff)
}}

func migrate(ctx context.Context, t *trial, src *corev1.Pod, target string, strategy v1.Strategy, cutoff time.Duration) (moved, error) {
	c := t.b.mc
	m := migrationclient.Request{Namespace: t.ns, Pod: src.Name, TargetNode: target, GenerateName: "bench-"}.Object()
	m.Spec.Strategy = strategy
	m.Spec.ReplayCutoffSeconds = ptr.To(int32(cutoff / time.Second))
	if err := c.Create(ctx, m); err != nil {
		return moved{}, fmt.Errorf("creating the StatefulMigration: %w", err)
	}
	last, err := migrationclient.Follow(ctx, c, client.ObjectKeyFromObject(m), nil)
	if last != nil {
		m = last
	}
	if err != nil {
		return moved{}, fmt.Errorf("migration %s is %s: %w", m.Name, m.Status.Phase, err)
	}
	if m.Status.Phase != v1.PhaseCompleted {
		return moved{}, fmt.Errorf("migration %s %s: %s", m.Name, m.Status.Phase, m.Status.FailureReason)
	}
	out := moved{Pod: m.Status.TargetPod}
	for _, s := range migrationclient.PhaseSpans(&m.Status, time.Time{}) {
		if !s.Phase.IsTerminal() {
			out.Phases = append(out.Phases, span{Name: string(s.Phase), Duration: s.Duration})
		}
	}
	entered := func(p v1.Phase) time.Time {
		for _, t := range m.Status.PhaseTransitions {
			if t.Phase == p {
				return t.EnteredTime.Time
			}
		}
		return time.Time{}
	}
	if strategy == v1.StrategyShadowPod {
		// Two stalls; stop-and-copy's is one, over the whole move.
		out.Pause = [2]time.Time{entered(v1.PhasePending), entered(v1.PhaseTransferring)}
		out.Handover = [2]time.Time{entered(v1.PhaseFinalizing), entered(v1.PhaseCompleted)}
	}
	if m.Status.Downtime != nil {
		out.ControllerDowntime = m.Status.Downtime.Duration
	}
	if c := meta.FindStatusCondition(m.Status.Conditions, v1.ConditionReplayCaughtUp); c != nil {
		out.Cutover = c.Reason
	}
	if c := meta.FindStatusCondition(m.Status.Conditions, v1.ConditionHandedOver); c != nil {
		out.HandedOver = c.Message
	}
	if ck, err := v1.AgentResultOf(m, v1.AnnotationAgentCheckpoint); err == nil && ck != nil && ck.Steps != nil {
		out.Checkpoint = ck.Steps.String()
		if ck.Steps.ResumedAtThaw && ck.Steps.Frozen != nil {
			out.Frozen = ck.Steps.Frozen.Duration
		}
	}
	return out, nil
}
