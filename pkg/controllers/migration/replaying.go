package migration

import (
	"context"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/replay"
)

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
	src, o, err := w.sourceStill(ctx, "during the replay")
	if src == nil {
		return o, err
	}
	// The samples are not on the downtime's path: a sidecar that does not
	// answer within positionTimeout is asked again at the next sample, and
	// holds this worker no longer.
	sctx, cancel := context.WithTimeout(ctx, positionTimeout)
	defer cancel()
	tpos, err := w.r.Sidecars.Position(sctx, w.sidecarAddr(target))
	if err != nil {
		return after(w.r.Opts.ReplaySample) // the sidecar may be starting; the restore timeout does not apply any more
	}
	spos, err := w.r.Sidecars.Position(sctx, w.sidecarAddr(src))
	if err != nil {
		return sidecarFailed(ctx, err, v1.ReasonHandoverFailed, "the source's sidecar")
	}
	if tpos.Mode == replay.ModeLive {
		// Handed over by a reconcile that died before recording it: the
		// fence (asked again, it answers the same F) and the handover
		// (the same outcome) record it now.
		if o, fenced, err := w.fence(ctx, src); !fenced {
			return o, err
		}
		return w.nextNow(ctx, "the target went live at the fence before the controller recorded it")
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
		w.r.Metrics.ReplayRate.WithLabelValues(m.Namespace, m.Name).Set(mu)
		w.r.Metrics.ArrivalRate.WithLabelValues(m.Namespace, m.Name).Set(lambda)
	}

	budget := time.Duration(ptr.Deref(m.Spec.DowntimeBudgetMilliseconds, 100)) * time.Millisecond
	cutoff := seconds(m.Spec.ReplayCutoffSeconds, w.r.Opts.DefaultReplayCutoff)
	c := decideCutover(tpos.Lag, mu, lambda, budget, now.Sub(enteredAt(&m.Status, v1.PhaseReplaying)), cutoff)
	if !c.Now {
		return after(w.r.Opts.ReplaySample)
	}
	if pdb, err := w.reserveDisruption(ctx, src); err != nil {
		return outcome{}, err
	} else if pdb != "" {
		// The handover would take the workload below its budget: replay on
		// (the source serves) until the budget allows one disruption, for
		// at most DisruptionBudgetTimeout: a budget that never allows one
		// would hold a migration slot (and a drain) forever.
		since := w.waitingForBudgetSince(now)
		if waited := now.Sub(since); w.r.Opts.DisruptionBudgetTimeout > 0 && waited >= w.r.Opts.DisruptionBudgetTimeout {
			return fail(v1.ReasonDisruptionBudgetTimedOut, "PodDisruptionBudget %s allowed no disruption for %s (--disruption-budget-timeout=%s); "+
				"the source serves on: raise the budget's allowance or migrate when the workload has spare replicas", pdb, waited.Round(time.Second), w.r.Opts.DisruptionBudgetTimeout)
		}
		setCondition(&m.Status, m.Generation, v1.ConditionReplayCaughtUp, false, v1.ReasonDisruptionBudget,
			fmt.Sprintf("%s; waiting for PodDisruptionBudget %s to allow a disruption before the handover", c.Message, pdb))
		return after(w.r.Opts.DisruptionRetry)
	}
	setCondition(&m.Status, m.Generation, v1.ConditionReplayCaughtUp, true, c.Reason, c.Message)
	if c.Reason == v1.ReasonCaughtUp && tpos.Lag > 0 {
		// The budget allows the rest of the lag on the handover's stall;
		// the target is let catch up first, for a moment, so that what it
		// replays after the fence is what the source processes between
		// its answer and the fence. A target that does not catch up in
		// time (λ near μ) is fenced anyway, as the budget allows.
		cctx, cancel := context.WithTimeout(ctx, catchUpWait+time.Second)
		_, _ = w.r.Sidecars.CaughtUp(cctx, w.sidecarAddr(target), catchUpWait)
		cancel()
	}
	if o, fenced, err := w.fence(ctx, src); !fenced {
		return o, err
	}
	w.r.samples.forget(m.UID)
	// The handover follows in this reconcile: neither the status write nor
	// the next reconcile is on the downtime's path. After a crash before
	// the status is written, the next reconcile fences again and hands
	// over again; both calls are idempotent (a second fence answers the
	// same F, a second handover at it the same outcome).
	return w.nextNow(ctx, fmt.Sprintf("source fenced at %v; the target replays to exactly there and goes live", fromOffsets(m.Status.FenceOffsets)))
}

// catchUpWait bounds how long a target within the downtime budget is let
// catch up before the fence.
const catchUpWait = time.Second

// positionTimeout bounds a replay sample's sidecar calls.
const positionTimeout = 5 * time.Second

// waitingForBudgetSince is when the handover began waiting for a
// PodDisruptionBudget: the transition time of ReplayCaughtUp with reason
// WaitingForDisruptionBudget, which it records now when the condition has
// another reason (a condition keeps its transition time while its status
// stays False).
func (w *work) waitingForBudgetSince(now time.Time) time.Time {
	st := &w.m.Status
	if c := meta.FindStatusCondition(st.Conditions, v1.ConditionReplayCaughtUp); c != nil && c.Reason == v1.ReasonDisruptionBudget {
		return c.LastTransitionTime.Time
	}
	meta.RemoveStatusCondition(&st.Conditions, v1.ConditionReplayCaughtUp)
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: v1.ConditionReplayCaughtUp, Status: metav1.ConditionFalse,
		Reason: v1.ReasonDisruptionBudget, ObservedGeneration: w.m.Generation, LastTransitionTime: metav1.NewTime(now)})
	return now
}

// replayingToFence is Replaying for Sequential: the source was fenced
// before the restore, so there is nothing to decide; the restored pod
// replays to the fence in the handover.
func replayingToFence(_ context.Context, w *work) (outcome, error) {
	return w.next(fmt.Sprintf("the restored pod replays to the fence %v and goes live", fromOffsets(w.m.Status.FenceOffsets))), nil
}
