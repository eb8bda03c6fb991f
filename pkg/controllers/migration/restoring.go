package migration

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migratable"
)

// buildTarget is m's target pod for the source src, outside its owner's
// selector.
func (w *work) buildTarget(ctx context.Context, m *v1.StatefulMigration, src *corev1.Pod) (*corev1.Pod, error) {
	keys, err := w.selectorKeys(ctx, src)
	if err != nil {
		return nil, err
	}
	return migratable.BuildTarget(m, src, keys, migratable.AppContainers(m, src)[0])
}

// restoring creates the target pod from the checkpoint image on the target
// node, its sidecar replaying from O, and waits until it runs.
func restoring(ctx context.Context, w *work) (outcome, error) {
	m := w.m
	if o, down, err := w.targetNodeDown(ctx); err != nil || down {
		return o, err
	}
	target, err := w.targetPod(ctx)
	if o, late := w.timedOut(); late {
		if err == nil {
			if why := unschedulable(target); why != "" {
				return fail(v1.ReasonPhaseTimedOut, "phase Restoring did not finish within %s: target pod %s cannot be scheduled: %s", w.limit(), target.Name, why)
			}
		}
		return o, nil
	}
	if apierrors.IsNotFound(err) {
		src, o, err := w.sourceStill(ctx, "before the restore")
		if src == nil {
			return o, err
		}
		target, err = w.buildTarget(ctx, m, src)
		if err != nil {
			return outcome{}, err
		}
		if err := w.r.Client.Create(ctx, target); err != nil && !apierrors.IsAlreadyExists(err) {
			if unavailable(err) {
				// The pod webhook fails closed: while no manager answers
				// it, the API server refuses the target. Tried again,
				// within the phase's timeout, rather than rolled back.
				return outcome{}, fmt.Errorf("creating the target pod: %w", err)
			}
			return fail(v1.ReasonRestoreFailed, "creating the target pod: %v", err)
		}
		m.Status.TargetPod = target.Name
		return wait()
	}
	if err != nil {
		return outcome{}, err
	}
	next := fmt.Sprintf("target %s replays while the source serves", target.Name)
	if m.Status.FenceOffsets != nil {
		next = fmt.Sprintf("target %s goes live where the source stopped", target.Name)
	}
	return w.whenRunning(target,
		fmt.Sprintf("pod %s runs on %s, replaying from the checkpoint offsets", target.Name, target.Spec.NodeName), next)
}

// whenRunning ends Restoring once the restored pod runs: it fails on a
// container in trouble, waits (bounded by the phase's timeout) until every
// container runs, then records restored and enters Replaying saying next.
func (w *work) whenRunning(pod *corev1.Pod, restored, next string) (outcome, error) {
	m := w.m
	m.Status.TargetPod = pod.Name
	if trouble := containerTrouble(pod); trouble != "" {
		return fail(v1.ReasonRestoreFailed, "%s", trouble)
	}
	if !allRunning(pod) {
		return after(w.remaining())
	}
	setCondition(&m.Status, m.Generation, v1.ConditionTargetRestored, true, v1.ReasonSucceeded, restored)
	return w.next(next), nil
}

// restoringInPlace is Restoring for Sequential: the source (fenced) is
// deleted; its StatefulSet recreates the pod under the same name, which
// the pod mutation webhook restores from the checkpoint image on the
// target node (migratable.RestoreStatefulSetPod); then it must run.
//
// The target node going NotReady does not fail it early: the source is
// fenced and released already, so a rollback has nothing to resume, and
// the node may come back with the restored state. The phase timeout bounds
// the wait and then names the node.
func restoringInPlace(ctx context.Context, w *work) (outcome, error) {
	m := w.m
	if o, late := w.timedOut(); late {
		if why, _, err := w.targetNodeHealth(ctx); err != nil {
			return outcome{}, err
		} else if why != "" {
			return fail(v1.ReasonTargetNodeNotReady, "phase Restoring did not finish within %s: target node %s is not Ready: %s", w.limit(), m.Status.TargetNode, why)
		}
		return o, nil
	}
	pod, err := w.sourcePod(ctx)
	if apierrors.IsNotFound(err) {
		return after(w.remaining()) // its StatefulSet recreates it; the pod watch wakes us
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
		return after(w.remaining())
	}
	if pod.Annotations[v1.AnnotationMigrationName] != m.Name {
		return fail(v1.ReasonRestoreFailed, "the StatefulSet recreated %s without the checkpoint (admitted without the ms2m webhook's restore: "+
			"is its template still annotated %s, and pods.ms2m.io's failurePolicy Fail?): "+
			"it starts with empty state from the group's offsets at the fence", pod.Name, v1.AnnotationMigratable)
	}
	return w.whenRunning(pod,
		fmt.Sprintf("pod %s (same name, recreated by its StatefulSet) runs on %s, replaying from the checkpoint offsets", pod.Name, pod.Spec.NodeName),
		fmt.Sprintf("%s replays to the fence", pod.Name))
}

// unavailable says whether the API server refused a request for want of
// something it calls (an admission webhook it could not reach answers 500)
// or for load, rather than for the request itself.
func unavailable(err error) bool {
	return apierrors.IsInternalError(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsTimeout(err) ||
		apierrors.IsServerTimeout(err) || apierrors.IsTooManyRequests(err)
}
