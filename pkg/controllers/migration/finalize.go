package migration

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/replay"
)

func handedOver(m *v1.StatefulMigration) bool {
	return meta.IsStatusConditionTrue(m.Status.Conditions, v1.ConditionHandedOver)
}

// finalizing hands over at exactly the fence F (the source stopped live
// processing at F when Replaying ended), then gives the target the
// source's identity and removes the source.
func finalizing(ctx context.Context, w *work) (outcome, error) {
	m := w.m
	_, _, _, limit := w.timeouts()
	target, err := w.targetPod(ctx)
	switch {
	case apierrors.IsNotFound(err) && !handedOver(m):
		return fail(v1.ReasonHandoverFailed, "target pod %s disappeared", m.Status.TargetPod)
	case err != nil && !apierrors.IsNotFound(err):
		return outcome{}, err
	}
	if !handedOver(m) {
		if o, late := w.timedOut(limit); late {
			return o, nil
		}
		fence := fromOffsets(m.Status.FenceOffsets)
		addr := w.sidecarAddr(target.Status.PodIP, target)
		hctx, cancel := context.WithTimeout(ctx, w.remaining(limit))
		_, err := w.r.Sidecars.Handover(hctx, addr, fence)
		cancel()
		if err != nil {
			// The target may have gone live even though the answer was
			// lost; then the migration has succeeded.
			pos, perr := w.r.Sidecars.Position(ctx, addr)
			if perr != nil || pos.Mode != replay.ModeLive {
				return sidecarFailed(ctx, err, v1.ReasonHandoverFailed, "handover at the fence %v", fence)
			}
		}
		downtime := w.r.Clock.Since(enteredAt(&m.Status, downtimeFrom(m)))
		m.Status.Downtime = &metav1.Duration{Duration: downtime}
		if w.r.Metrics != nil {
			w.r.Metrics.DowntimeSeconds.Observe(downtime.Seconds())
		}
		setCondition(&m.Status, m.Generation, v1.ConditionHandedOver, true, v1.ReasonSucceeded,
			fmt.Sprintf("target live at the fence %v after %s without live processing", fence, downtime.Round(time.Millisecond)))
		w.event(corev1.EventTypeNormal, "HandedOver", "target %s live at the fence; downtime %s", target.Name, downtime.Round(time.Millisecond))
	}
	// A ReplicaSet that briefly owns both removes an unready pod first,
	// whatever its deletion cost: the target takes over once Ready.
	if target != nil && !podReady(target) {
		if o, late := w.timedOut(limit); late {
			return o, nil
		}
		return after(w.remaining(limit))
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
	if m.Status.Strategy == v1.StrategySequential {
		// The source was released in Restoring; the pod under its name
		// is the restored one, now the StatefulSet's ordinary pod.
		if err := w.unmarkRestored(ctx, target); err != nil {
			return outcome{}, err
		}
	} else if err := w.removeSource(ctx); err != nil {
		return outcome{}, err
	}
	setCondition(&m.Status, m.Generation, v1.ConditionReady, true, v1.ReasonSucceeded, "migrated")
	w.advance(v1.PhaseCompleted, "Completed", fmt.Sprintf("%s now runs as %s on %s", m.Spec.SourcePod, m.Status.TargetPod, m.Status.TargetNode))
	w.r.countResult(m, "completed")
	return outcome{}, nil
}

// giveIdentity makes the target the owner's pod: the source's labels and
// owner references.
func (w *work) giveIdentity(ctx context.Context, target *corev1.Pod) error {
	if _, pending := target.Annotations[annotationSourceOwners]; !pending {
		return nil
	}
	patch := client.MergeFrom(target.DeepCopy())
	if err := adopt(target); err != nil {
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

// downtimeFrom is the phase whose start stopped live processing: the fence
// ends Replaying for ShadowPod, and Transferring for Sequential (the source
// is released before the restore).
func downtimeFrom(m *v1.StatefulMigration) v1.Phase {
	if m.Status.Strategy == v1.StrategySequential {
		return v1.PhaseRestoring
	}
	return v1.PhaseFinalizing
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
