package migration

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/replay"
)

// rollback ends a migration as Failed with the source serving: the target
// pod is removed first (so it stops consuming), then the source's sidecar
// resumes (after a pause or a fence alike). Nothing is lost: the source's
// group offsets never moved past what it applied.
//
// It does not wait for the target pod to be gone: on a node whose kubelet
// is unreachable the deletion stays pending until the kubelet is back (or
// the node is deleted), and the target, never handed over, only replays
// and never commits for the group meanwhile.
func (r *Reconciler) rollback(ctx context.Context, w *work, reason, msg string) error {
	m := w.m
	logger := log.FromContext(ctx)
	if src, err := w.sourcePod(ctx); err == nil && m.Status.Strategy == v1.StrategySequential && m.Status.SourceUID != "" && src.UID != m.Status.SourceUID {
		// Sequential, after the source was released: the pod under its
		// name is the StatefulSet's new one; there is no source to go back
		// to, and deleting that pod would not bring one back.
		return r.failed(w, reason, msg, fmt.Sprintf("the source was already released: StatefulSet pod %s stays as it is; "+
			"if it does not serve, delete it and its StatefulSet starts it again from the group's committed offsets (in-memory state rebuilt from there)", src.Name))
	} else if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if target, err := w.targetPod(ctx); err == nil {
		if live, err := r.abortTarget(ctx, w, target); err != nil || live {
			return err
		}
		if err := r.Client.Delete(ctx, target, client.Preconditions{UID: &target.UID}); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	} else if !apierrors.IsNotFound(err) {
		return err
	}
	resumed := "the source was not touched"
	if m.Status.Phase != v1.PhasePending {
		src, err := w.sourcePod(ctx)
		switch {
		case apierrors.IsNotFound(err):
			resumed = "the source pod is gone"
		case err != nil:
			return err
		case src.DeletionTimestamp != nil || src.Status.Phase != corev1.PodRunning:
			resumed = "the source pod is " + string(src.Status.Phase) + " or being deleted"
		default:
			if err := r.setSidecarMode(ctx, src, ""); err != nil {
				return err
			}
			pos, err := r.Sidecars.Rejoin(ctx, w.sidecarAddr(src))
			if err != nil {
				// Requeued: a source left paused or fenced would not serve.
				logger.Error(err, "resuming the source's sidecar during rollback", "pod", src.Name)
				return fmt.Errorf("rollback: resuming the source's sidecar: %w", err)
			}
			resumed = "the source serves again"
			if m.Status.FenceOffsets != nil {
				// Fenced, then resumed: that stall is the migration's too.
				d := w.fenceStall(pos.ResumedAt)
				resumed += fmt.Sprintf(" (after %s fenced; downtime %s: %s)", v1.FormatDuration(d), v1.FormatDuration(m.Status.Downtime.Duration), m.Status.Stalls.Split())
			}
		}
	}
	return r.failed(w, reason, msg, resumed)
}

// abortTarget makes sure a target that may have been asked to hand over
// never goes live once the source resumes. The target's sidecar is the
// only one that knows whether it went live (the Handover's answer may have
// been lost): it answers an abort with aborted, or with live, in which
// case the migration has succeeded and is recorded as handed over instead
// of rolled back (live is true). A target that cannot answer keeps the
// source fenced (an error: requeued), until it answers or its pod is gone.
// Before Finalizing no handover was asked, so there is nothing to settle.
func (r *Reconciler) abortTarget(ctx context.Context, w *work, target *corev1.Pod) (bool, error) {
	if w.m.Status.Phase != v1.PhaseFinalizing || target.DeletionTimestamp != nil && target.Status.Phase != corev1.PodRunning {
		return false, nil
	}
	pos, err := r.Sidecars.Abort(ctx, w.sidecarAddr(target))
	if err != nil {
		return false, fmt.Errorf("rollback: the target %s may have gone live and its sidecar does not say (%w); the source stays fenced until it answers or the pod is gone", target.Name, err)
	}
	if pos.Mode != replay.ModeLive {
		return false, nil
	}
	log.FromContext(ctx).Info("rollback found the target live: the handover happened", "target", target.Name)
	return true, w.handedOverTo(ctx, target, pos, "")
}

// failed records the end of a failed migration and what the rollback did.
func (r *Reconciler) failed(w *work, reason, msg, resumed string) error {
	m := w.m
	m.Status.FailureReason = msg
	setCondition(&m.Status, m.Generation, v1.ConditionRolledBack, true, reason, resumed)
	setCondition(&m.Status, m.Generation, v1.ConditionReady, false, reason, msg)
	w.event(corev1.EventTypeWarning, reason, "%s; rolled back: %s", msg, resumed)
	enterPhase(&m.Status, v1.PhaseFailed, r.Clock.Now())
	r.samples.forget(m.UID)
	r.countResult(m, "failed")
	return nil
}
