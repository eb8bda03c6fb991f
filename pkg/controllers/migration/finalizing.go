package migration

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migratable"
	"github.com/ms2m/ms2m/pkg/replay"
)

func handedOver(m *v1.StatefulMigration) bool {
	return meta.IsStatusConditionTrue(m.Status.Conditions, v1.ConditionHandedOver)
}

// finalizing hands over at exactly the fence F (the source stopped live
// processing at F when Replaying ended), then gives the target the
// source's identity and removes the source.
//
// The target node's readiness does not fail this phase. Before the
// handover the handover is attempted anyway: the controller reaches the
// target's sidecar at its pod IP, which a kubelet cut off from the API
// server does not prevent; if the sidecar cannot be reached the handover
// is retried until the phase times out, and the rollback then resumes the
// source at F: nothing is lost when the target never received the
// handover. (A handover that reached it, whose answer was lost before the
// sidecar became unreachable, cannot be told apart here: a known gap, not
// tied to the node's readiness.) After the handover the migration never
// rolls back (below).
func finalizing(ctx context.Context, w *work) (outcome, error) {
	target, o, live, err := w.handOver(ctx)
	if !live || err != nil {
		return o, err
	}
	// The source first becomes the pod its ReplicaSet removes first, then
	// the target takes the source's identity (for a moment the ReplicaSet
	// owns both and removes the source), then the source is deleted.
	if err := w.markSourceForRemoval(ctx); err != nil {
		return outcome{}, err
	}
	if target != nil {
		if err := w.giveIdentity(ctx, target); err != nil {
			return outcome{}, err
		}
	}
	if err := w.removeSource(ctx); err != nil {
		return outcome{}, err
	}
	return w.completed(), nil
}

// finalizingInPlace is Finalizing for Sequential: the source was released
// in Restoring; the pod under its name is the restored one, which becomes
// the StatefulSet's ordinary pod once it is live and Ready.
func finalizingInPlace(ctx context.Context, w *work) (outcome, error) {
	target, o, live, err := w.handOver(ctx)
	if !live || err != nil {
		return o, err
	}
	if err := w.unmarkRestored(ctx, target); err != nil {
		return outcome{}, err
	}
	return w.completed(), nil
}

func (w *work) completed() outcome {
	m := w.m
	setCondition(&m.Status, m.Generation, v1.ConditionReady, true, v1.ReasonSucceeded, "migrated")
	w.next(fmt.Sprintf("%s now runs as %s on %s", m.Spec.SourcePod, m.Status.TargetPod, m.Status.TargetNode))
	w.r.countResult(m, "completed")
	return outcome{}
}

// handOver makes the target live at the fence, once, and reports whether
// it is live and Ready (else the phase's outcome: wait, retry or fail).
func (w *work) handOver(ctx context.Context) (*corev1.Pod, outcome, bool, error) {
	m := w.m
	target, err := w.targetPod(ctx)
	switch {
	case apierrors.IsNotFound(err) && !handedOver(m):
		o, _ := fail(v1.ReasonHandoverFailed, "target pod %s disappeared", m.Status.TargetPod)
		return nil, o, false, nil
	case apierrors.IsNotFound(err):
		target = nil
	case err != nil:
		return nil, outcome{}, false, err
	}
	if !handedOver(m) {
		if o, late := w.timedOut(); late {
			return nil, o, false, nil
		}
		fence := fromOffsets(m.Status.FenceOffsets)
		addr := w.sidecarAddr(target)
		hctx, cancel := context.WithTimeout(ctx, w.remaining())
		called := w.r.Clock.Now()
		live, err := w.r.Sidecars.Handover(hctx, addr, fence)
		path := w.handoverPath(called, w.r.Clock.Since(called), live.HandoverSteps)
		cancel()
		if err != nil {
			// The target may have gone live even though the answer was
			// lost; then the migration has succeeded.
			pos, perr := w.r.Sidecars.Position(ctx, addr)
			if perr != nil || pos.Mode != replay.ModeLive {
				o, err := sidecarFailed(ctx, err, v1.ReasonHandoverFailed, "handover at the fence %v", fence)
				return nil, o, false, err
			}
			live, path = pos, ""
		}
		if err := w.handedOverTo(ctx, target, live, path); err != nil {
			return nil, outcome{}, false, err
		}
		// Recorded before the source is touched: a reconcile that dies
		// after removing it must not leave a migration whose status says
		// the source should still be there.
		if err := w.commit(ctx); err != nil {
			return nil, outcome{}, false, err
		}
	}
	// A ReplicaSet that briefly owns both removes an unready pod first,
	// whatever its deletion cost: the target takes over once Ready.
	//
	// Past the handover there is no timeout and no rollback: the target
	// processes live from F and the source is fenced, so resuming the
	// source would put two live consumers in the group, and what the
	// target processed would be lost with it. A target whose node went
	// NotReady (its pod is then marked not Ready) keeps the migration here,
	// saying so, until the node is back; the pod and node watches wake us.
	if target != nil && !podReady(target) {
		reason, msg := v1.ReasonInProgress, fmt.Sprintf("handed over: target %s is live at the fence, waiting for it to be Ready", target.Name)
		if why, _, err := w.targetNodeHealth(ctx); err != nil {
			return nil, outcome{}, false, err
		} else if why != "" {
			reason = v1.ReasonTargetNodeNotReady
			msg = fmt.Sprintf("handed over: target %s is live at the fence but its node %s is not Ready (%s); "+
				"the source stays fenced (resuming it would run two live consumers) until the node is back", target.Name, m.Status.TargetNode, why)
		}
		setCondition(&m.Status, m.Generation, v1.ConditionReady, false, reason, msg)
		return target, outcome{}, false, nil
	}
	return target, outcome{}, true, nil
}

// giveIdentity makes the target the owner's pod: the source's labels and
// owner references.
func (w *work) giveIdentity(ctx context.Context, target *corev1.Pod) error {
	patch := client.MergeFrom(target.DeepCopy())
	if changed, err := migratable.Adopt(target); err != nil || !changed {
		return err
	}
	return w.r.Client.Patch(ctx, target, patch)
}

// markSourceForRemoval gives a ReplicaSet-owned source the lowest pod
// deletion cost, so the ReplicaSet, owning source and target for a moment,
// removes the source and never the target.
func (w *work) markSourceForRemoval(ctx context.Context) error {
	src, err := w.sourcePod(ctx)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	ref := metav1.GetControllerOf(src)
	if ref == nil || ref.Kind != "ReplicaSet" || src.DeletionTimestamp != nil || src.Annotations[annotationDeletionCost] == lowestCost {
		return nil
	}
	patch := client.MergeFrom(src.DeepCopy())
	if src.Annotations == nil {
		src.Annotations = map[string]string{}
	}
	src.Annotations[annotationDeletionCost] = lowestCost
	return client.IgnoreNotFound(w.r.Client.Patch(ctx, src, patch))
}

const lowestCost = "-2147483648"

// removeSource deletes the source pod.
func (w *work) removeSource(ctx context.Context) error {
	src, err := w.sourcePod(ctx)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil || src.DeletionTimestamp != nil {
		return err
	}
	return client.IgnoreNotFound(w.r.Client.Delete(ctx, src, client.Preconditions{UID: &src.UID}))
}

// unmarkRestored removes the migration's marks from a restored
// StatefulSet pod once it is live, so it is an ordinary (and again
// migratable) pod of its StatefulSet.
func (w *work) unmarkRestored(ctx context.Context, target *corev1.Pod) error {
	if target == nil || target.Labels[v1.LabelMigration] == "" {
		return nil
	}
	patch := client.MergeFrom(target.DeepCopy())
	delete(target.Labels, v1.LabelMigration)
	delete(target.Annotations, v1.AnnotationMigrationName)
	return client.IgnoreNotFound(w.r.Client.Patch(ctx, target, patch))
}

// handedOverTo records that target is live at the fence: on the pod, so
// that its sidecar stays live across restarts, then in the status, with
// the downtime.
func (w *work) handedOverTo(ctx context.Context, target *corev1.Pod, live replay.Position, path string) error {
	m := w.m
	// Where the target's sidecar says it went live, next to F: what the
	// zero-loss line reports as observed.
	if len(live.LiveFrom) > 0 && len(m.Status.FenceOffsets) > 0 {
		m.Status.TargetLiveOffsets = toOffsets(m.Status.FenceOffsets[0].Topic, only(live.LiveFrom, slices.Collect(maps.Keys(fromOffsets(m.Status.FenceOffsets)))))
	}
	if err := w.r.setSidecarMode(ctx, target, v1.SidecarModeLive); err != nil {
		return err
	}
	handover := w.fenceStall(live.LiveAt)
	downtime := m.Status.Downtime.Duration
	if w.r.Metrics != nil {
		w.r.Metrics.HandoverSeconds.Observe(handover.Seconds())
		w.r.Metrics.DowntimeSeconds.Observe(downtime.Seconds())
	}
	split := m.Status.Stalls.Split()
	if path != "" {
		path = v1.HandoverPathPrefix + path
	}
	setCondition(&m.Status, m.Generation, v1.ConditionHandedOver, true, v1.ReasonSucceeded,
		fmt.Sprintf("target live at the fence %v; downtime %s (%s)%s", fromOffsets(m.Status.FenceOffsets), v1.FormatDuration(downtime), split, path))
	w.event(corev1.EventTypeNormal, "HandedOver", "target %s live at the fence; downtime %s (%s)", target.Name, v1.FormatDuration(downtime), split)
	return nil
}

// handoverPath says where the handover's stall went, by the controller's
// clock and the target's: "fence call 5.1ms, controller 0.4ms, handover
// call 9.3ms (target 2 messages behind the fence: replayed in 6.2ms,
// joined in 2.1ms)". The fence call is left out when it was made in an
// earlier reconcile, the target's part when it reported none.
func (w *work) handoverPath(called time.Time, call time.Duration, st *replay.HandoverSteps) string {
	var parts []string
	if !w.fenceAnswered.IsZero() {
		parts = append(parts, "fence call "+v1.FormatDuration(w.fenceCall), "controller "+v1.FormatDuration(called.Sub(w.fenceAnswered)))
	}
	s := "handover call " + v1.FormatDuration(call)
	if st != nil {
		msgs := "messages"
		if st.Behind == 1 {
			msgs = "message"
		}
		s += fmt.Sprintf(" (target %d %s behind the fence: replayed in %s, joined in %s)", st.Behind, msgs, v1.FormatDuration(st.Replay), v1.FormatDuration(st.Join))
	}
	return strings.Join(append(parts, s), ", ")
}

// stall is the interval from start to end as a sidecar reported them
// (measured true); when it reported either not (a sidecar restarted in
// between), the controller's own from, to (measured false).
func stall(start, end *time.Time, from, to time.Time) (time.Duration, bool) {
	if start != nil && end != nil && !end.Before(*start) {
		return end.Sub(*start), true
	}
	return to.Sub(from), false
}

// fenceStall records the handover stall, from the source's fence to end
// (the target live, or the source resumed by a rollback), as the sidecars
// timed them or else from the phase the strategy fences in.
func (w *work) fenceStall(end *time.Time) time.Duration {
	d, measured := stall(timeOf(w.m.Status.FenceTime), end, enteredAt(&w.m.Status, strategyOf(w.m).fencedIn), w.r.Clock.Now())
	w.recordStall(func(s *v1.Stalls) { s.Handover = &metav1.Duration{Duration: d} }, measured)
	return d
}

// timeOf is t as a sidecar's time: nil when it was not reported.
func timeOf(t *metav1.MicroTime) *time.Time {
	if t == nil {
		return nil
	}
	return &t.Time
}

// recordStall sets one stall in the status and the downtime to their sum.
func (w *work) recordStall(set func(*v1.Stalls), bySidecars bool) {
	st := &w.m.Status
	if st.Stalls == nil {
		st.Stalls = &v1.Stalls{Measured: v1.StallsBySidecars}
	}
	set(st.Stalls)
	if !bySidecars {
		st.Stalls.Measured = v1.StallsByController
	}
	var sum time.Duration
	for _, d := range []*metav1.Duration{st.Stalls.CheckpointPause, st.Stalls.Handover} {
		if d != nil {
			sum += d.Duration
		}
	}
	st.Downtime = &metav1.Duration{Duration: sum}
}
