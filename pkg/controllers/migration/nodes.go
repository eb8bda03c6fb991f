package migration

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crevent "sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// The target node's health. A node whose kubelet stops reaching the API
// server (a partition, a crashed or powered-off machine) is marked
// Ready=Unknown by the node lifecycle controller after its grace period;
// the pods on it then neither report nor confirm their deletion.
//
// What the controller does about it depends on the fence:
//
//   - Before the fence (ShadowPod Restoring and Replaying) the source
//     serves live and the target only replays (it never commits for the
//     group), so failing is safe and is what lets the source be the
//     workload's only copy again: the migration fails with
//     TargetNodeNotReady naming the node and rolls back. The target pod's
//     deletion stays pending until the node's kubelet is back (or the node
//     is deleted); nothing waits for it: the pod has its own name, is
//     outside its owner's selector, and, on an unreachable node, still
//     only replays.
//   - After the fence (Finalizing, and Sequential from Restoring on) the
//     node's readiness does not fail the migration: see finalizing and
//     restoringInPlace.

const indexTargetNode = "status.targetNode"

// migrationsOnNode maps a Node to the unfinished migrations targeting it.
func (r *Reconciler) migrationsOnNode(ctx context.Context, o client.Object) []reconcile.Request {
	return r.unfinished(ctx, client.MatchingFields{indexTargetNode: o.GetName()})
}

// readinessChanged passes the Node events that matter to a migration: its
// Ready condition changing, and its deletion (not every heartbeat).
var readinessChanged = predicate.Funcs{
	CreateFunc: func(crevent.CreateEvent) bool { return false },
	UpdateFunc: func(e crevent.UpdateEvent) bool {
		old, okOld := e.ObjectOld.(*corev1.Node)
		cur, okNew := e.ObjectNew.(*corev1.Node)
		return !okOld || !okNew || (nodeNotReady(old) == "") != (nodeNotReady(cur) == "")
	},
	DeleteFunc:  func(crevent.DeleteEvent) bool { return true },
	GenericFunc: func(crevent.GenericEvent) bool { return false },
}

// nodeNotReady says why n is not Ready, "" when it is: its Ready condition
// is False (the kubelet says so) or Unknown (the node lifecycle controller
// has not heard from the kubelet within its grace period), or missing.
func nodeNotReady(n *corev1.Node) string {
	for _, c := range n.Status.Conditions {
		if c.Type != corev1.NodeReady {
			continue
		}
		if c.Status == corev1.ConditionTrue {
			return ""
		}
		why := fmt.Sprintf("Ready=%s", c.Status)
		if !c.LastTransitionTime.IsZero() {
			why += " since " + c.LastTransitionTime.UTC().Format(time.RFC3339)
		}
		if c.Reason != "" || c.Message != "" {
			why += fmt.Sprintf(" (%s: %s)", c.Reason, c.Message)
		}
		return why
	}
	return "no Ready condition: its kubelet has never reported"
}

// targetNodeDown fails the migration when its target node is gone or not
// Ready. Only for the phases before the fence: rolling back then leaves the
// source, which never stopped serving, as the only consumer.
func (w *work) targetNodeDown(ctx context.Context) (outcome, bool, error) {
	why, gone, err := w.targetNodeHealth(ctx)
	switch {
	case err != nil:
		return outcome{}, false, err
	case gone:
		o, _ := fail(v1.ReasonTargetNodeNotFound, "target node %s was deleted during %s", w.m.Status.TargetNode, w.m.Status.Phase)
		return o, true, nil
	case why != "":
		o, _ := fail(v1.ReasonTargetNodeNotReady, "target node %s is not Ready during %s: %s", w.m.Status.TargetNode, w.m.Status.Phase, why)
		return o, true, nil
	}
	return outcome{}, false, nil
}

// targetNodeHealth says why the target node is not Ready ("" when it is,
// or when no target is chosen yet), or that it no longer exists.
func (w *work) targetNodeHealth(ctx context.Context) (why string, gone bool, err error) {
	if w.m.Status.TargetNode == "" {
		return "", false, nil
	}
	n := &corev1.Node{}
	if err := w.r.Client.Get(ctx, client.ObjectKey{Name: w.m.Status.TargetNode}, n); err != nil {
		if apierrors.IsNotFound(err) {
			return "the node was deleted", true, nil
		}
		return "", false, err
	}
	return nodeNotReady(n), false, nil
}
