package migration

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// restoring creates the target pod from the checkpoint image on the target
// node, its sidecar replaying from O, and waits until it runs.
func restoring(ctx context.Context, w *work) (outcome, error) {
	m := w.m
	if m.Status.Strategy == v1.StrategySequential {
		return restoringInPlace(ctx, w)
	}
	if o, down, err := w.targetNodeDown(ctx); err != nil || down {
		return o, err
	}
	_, _, limit, _ := w.timeouts()
	target, err := w.targetPod(ctx)
	if o, late := w.timedOut(limit); late {
		if err == nil {
			if why := unschedulable(target); why != "" {
				return fail(v1.ReasonPhaseTimedOut, "phase Restoring did not finish within %s: target pod %s cannot be scheduled: %s", limit, target.Name, why)
			}
		}
		return o, nil
	}
	if apierrors.IsNotFound(err) {
		src, err := w.sourcePod(ctx)
		if apierrors.IsNotFound(err) {
			return fail(v1.ReasonSourcePodNotFound, "source pod %s disappeared before the restore", m.Spec.SourcePod)
		}
		if err != nil {
			return outcome{}, err
		}
		keys, err := w.selectorKeys(ctx, src)
		if err != nil {
			return outcome{}, err
		}
		target, err = buildTarget(m, src, keys, appContainers(m, src)[0])
		if err != nil {
			return outcome{}, err
		}
		if err := w.r.Client.Create(ctx, target); err != nil && !apierrors.IsAlreadyExists(err) {
			return fail(v1.ReasonRestoreFailed, "creating the target pod: %v", err)
		}
		m.Status.TargetPod = target.Name
		return wait()
	}
	if err != nil {
		return outcome{}, err
	}
	return w.whenRunning(target, limit,
		fmt.Sprintf("pod %s runs on %s, replaying from the checkpoint offsets", target.Name, target.Spec.NodeName),
		fmt.Sprintf("target %s replays while the source serves", target.Name))
}

// whenRunning ends Restoring once the restored pod runs: it fails on a
// container in trouble, waits (bounded by limit) until every container
// runs, then records restored and enters Replaying saying next.
func (w *work) whenRunning(pod *corev1.Pod, limit time.Duration, restored, next string) (outcome, error) {
	m := w.m
	m.Status.TargetPod = pod.Name
	if trouble := containerTrouble(pod); trouble != "" {
		return fail(v1.ReasonRestoreFailed, "%s", trouble)
	}
	if !allRunning(pod) {
		return after(w.remaining(limit))
	}
	setCondition(&m.Status, m.Generation, v1.ConditionTargetRestored, true, v1.ReasonSucceeded, restored)
	return w.advance(v1.PhaseReplaying, "Replaying", next), nil
}

// sample is a previous look at the replay, for the rates.
type sample struct {
	at       time.Time
	replayed int64
	live     int64
}

type sampleCache struct {
	mu sync.Mutex
	m  map[types.UID]sample
}

func (c *sampleCache) swap(uid types.UID, s sample) (sample, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[types.UID]sample{}
	}
	prev, ok := c.m[uid]
	c.m[uid] = s
	return prev, ok
}

func (c *sampleCache) forget(uid types.UID) {
	c.mu.Lock()
	delete(c.m, uid)
	c.mu.Unlock()
}

func sum(m map[int]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// replaying samples the target's lag and the rates μ (replay) and λ
// (arrival, as the source's live progress), and cuts over by the threshold
// rule: the fence is taken here, so downtime starts when Finalizing does.
func replaying(ctx context.Context, w *work) (outcome, error) {
	m := w.m
	if m.Status.Strategy == v1.StrategySequential {
		// Fenced before the restore: nothing to decide, the target
		// replays to the fence in the handover.
		return w.advance(v1.PhaseFinalizing, "Finalizing", fmt.Sprintf("the restored pod replays to the fence %v and goes live", fromOffsets(m.Status.FenceOffsets))), nil
	}
	if o, down, err := w.targetNodeDown(ctx); err != nil || down {
		return o, err
	}
	target, err := w.targetPod(ctx)
	if apierrors.IsNotFound(err) {
		return fail(v1.ReasonRestoreFailed, "target pod %s disappeared", m.Status.TargetPod)
	}
	if err != nil {
		return outcome{}, err
	}
	if trouble := containerTrouble(target); trouble != "" {
		return fail(v1.ReasonRestoreFailed, "%s", trouble)
	}
	src, err := w.sourcePod(ctx)
	if apierrors.IsNotFound(err) {
		return fail(v1.ReasonSourcePodNotFound, "source pod %s disappeared during the replay", m.Spec.SourcePod)
	}
	if err != nil {
		return outcome{}, err
	}
	tpos, err := w.r.Sidecars.Position(ctx, w.sidecarAddr(target.Status.PodIP, target))
	if err != nil {
		return after(w.r.Opts.ReplaySample) // the sidecar may be starting; the restore timeout does not apply any more
	}
	spos, err := w.r.Sidecars.Position(ctx, w.sidecarAddr(src.Status.PodIP, src))
	if err != nil {
		return sidecarFailed(ctx, err, v1.ReasonHandoverFailed, "the source's sidecar")
	}
	now := w.r.Clock.Now()
	cur := sample{at: now, replayed: tpos.Replayed, live: sum(spos.Next)}
	prev, ok := w.r.samples.swap(m.UID, cur)
	rp := m.Status.Replay
	if rp == nil {
		rp = &v1.ReplayProgress{}
	}
	var mu, lambda float64
	if ok && now.Sub(prev.at) > 0 {
		dt := now.Sub(prev.at).Seconds()
		mu, lambda = float64(cur.replayed-prev.replayed)/dt, float64(cur.live-prev.live)/dt
		rp.ReplayRatePerSecond, rp.ArrivalRatePerSecond = int64(mu), int64(lambda)
	} else {
		mu, lambda = float64(rp.ReplayRatePerSecond), float64(rp.ArrivalRatePerSecond)
	}
	rp.Replayed, rp.Lag = tpos.Replayed, tpos.Lag
	t := metav1.NewMicroTime(now)
	rp.LastSampleTime = &t
	m.Status.Replay = rp
	if w.r.Metrics != nil {
		w.r.Metrics.ReplayLag.WithLabelValues(m.Namespace, m.Name).Set(float64(tpos.Lag))
	}

	budget := time.Duration(ptr.Deref(m.Spec.DowntimeBudgetMilliseconds, 100)) * time.Millisecond
	cutoff := time.Duration(ptr.Deref(m.Spec.ReplayCutoffSeconds, 120)) * time.Second
	c := decideCutover(tpos.Lag, mu, lambda, budget, now.Sub(enteredAt(&m.Status, v1.PhaseReplaying)), cutoff)
	if !c.Now {
		return after(w.r.Opts.ReplaySample)
	}
	if pdb, err := w.reserveDisruption(ctx, src); err != nil {
		return outcome{}, err
	} else if pdb != "" {
		// The handover would take the workload below its budget: replay on
		// (the source serves) until the budget allows one disruption.
		setCondition(&m.Status, m.Generation, v1.ConditionReplayCaughtUp, false, v1.ReasonDisruptionBudget,
			fmt.Sprintf("%s; waiting for PodDisruptionBudget %s to allow a disruption before the handover", c.Message, pdb))
		return after(w.r.Opts.DisruptionRetry)
	}
	setCondition(&m.Status, m.Generation, v1.ConditionReplayCaughtUp, true, c.Reason, c.Message)
	pos, err := w.r.Sidecars.Fence(ctx, w.sidecarAddr(src.Status.PodIP, src))
	if err != nil {
		return sidecarFailed(ctx, err, v1.ReasonHandoverFailed, "fencing the source")
	}
	m.Status.FenceOffsets = toOffsets(w.topic(), pos.Next)
	w.r.samples.forget(m.UID)
	return w.advance(v1.PhaseFinalizing, "Finalizing", fmt.Sprintf("source fenced at %v; the target replays to exactly there and goes live", pos.Next)), nil
}

// fenceForRelease ends Transferring of a Sequential migration: the source
// stops live processing at the fence F (downtime starts), so that it can
// be released and its StatefulSet recreate the pod, which the webhook turns
// into the restored one. Fencing is idempotent: a repeat returns the same F.
func fenceForRelease(ctx context.Context, w *work) (outcome, error) {
	m := w.m
	src, err := w.sourcePod(ctx)
	if apierrors.IsNotFound(err) {
		return fail(v1.ReasonSourcePodNotFound, "source pod %s disappeared before the fence", m.Spec.SourcePod)
	}
	if err != nil {
		return outcome{}, err
	}
	pos, err := w.r.Sidecars.Fence(ctx, w.sidecarAddr(src.Status.PodIP, src))
	if err != nil {
		return sidecarFailed(ctx, err, v1.ReasonHandoverFailed, "fencing the source")
	}
	m.Status.FenceOffsets = toOffsets(w.topic(), pos.Next)
	return w.advance(v1.PhaseRestoring, "Restoring", fmt.Sprintf("source fenced at %v; releasing %s so its StatefulSet recreates it on %s from %s",
		pos.Next, src.Name, m.Status.TargetNode, m.Status.CheckpointImage)), nil
}

// restoringInPlace is Restoring for Sequential: the source (fenced) is
// deleted; its StatefulSet recreates the pod under the same name, which
// the pod mutation webhook restores from the checkpoint image on the
// target node (RestoreStatefulSetPod); then it must run.
//
// The target node going NotReady does not fail it early: the source is
// fenced and released already, so a rollback has nothing to resume, and
// the node may come back with the restored state. The phase timeout bounds
// the wait and then names the node.
func restoringInPlace(ctx context.Context, w *work) (outcome, error) {
	m := w.m
	_, _, limit, _ := w.timeouts()
	if o, late := w.timedOut(limit); late {
		if why, _, err := w.targetNodeHealth(ctx); err != nil {
			return outcome{}, err
		} else if why != "" {
			return fail(v1.ReasonTargetNodeNotReady, "phase Restoring did not finish within %s: target node %s is not Ready: %s", limit, m.Status.TargetNode, why)
		}
		return o, nil
	}
	pod, err := w.sourcePod(ctx)
	if apierrors.IsNotFound(err) {
		return after(w.remaining(limit)) // its StatefulSet recreates it; the pod watch wakes us
	}
	if err != nil {
		return outcome{}, err
	}
	if pod.UID == m.Status.SourceUID {
		if pod.DeletionTimestamp == nil {
			if err := w.r.Client.Delete(ctx, pod, client.Preconditions{UID: &pod.UID}); client.IgnoreNotFound(err) != nil {
				return outcome{}, err
			}
			w.event(corev1.EventTypeNormal, "SourceReleased", "deleted %s (fenced) so its StatefulSet recreates it, restored, on %s", pod.Name, m.Status.TargetNode)
		}
		return after(w.remaining(limit))
	}
	if pod.Annotations[v1.AnnotationMigrationName] != m.Name {
		return fail(v1.ReasonRestoreFailed, "the StatefulSet recreated %s without the checkpoint (was the ms2m webhook unavailable?): "+
			"it starts with empty state from the group's offsets at the fence", pod.Name)
	}
	return w.whenRunning(pod, limit,
		fmt.Sprintf("pod %s (same name, recreated by its StatefulSet) runs on %s, replaying from the checkpoint offsets", pod.Name, pod.Spec.NodeName),
		fmt.Sprintf("%s replays to the fence", pod.Name))
}
