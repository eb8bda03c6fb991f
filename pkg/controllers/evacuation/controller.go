// Package evacuation is the evacuation controller: when a node is cordoned
// or tainted with ms2m.io/drain, it starts a live migration for each
// migratable pod on the node, before any eviction arrives; when the node is
// uncordoned before one of them has started, it cancels it.
//
// It creates migrations only: how many run at once (per cluster, per source
// node) is the migration controller's limit, which holds the rest in
// Pending. The eviction webhook starts the same migrations (same names), so
// drain and evacuation never migrate a pod twice.
package evacuation

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/evacuation"
)

// indexNodeName finds the pods of a node in the cache.
const indexNodeName = "spec.nodeName"

// Reconciler evacuates draining nodes.
type Reconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
}

// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=migration.ms2m.io,resources=statefulmigrations,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// SetupWithManager watches nodes, and the pods on them (a migratable pod
// that starts running on a draining node is moved too).
func (r *Reconciler) SetupWithManager(mgr manager.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &corev1.Pod{}, indexNodeName,
		func(o client.Object) []string { return []string{o.(*corev1.Pod).Spec.NodeName} }); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&corev1.Node{}).
		Named("evacuation").
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if n := o.(*corev1.Pod).Spec.NodeName; n != "" && o.GetAnnotations()[v1.AnnotationMigratable] == "true" {
				return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: n}}}
			}
			return nil
		})).
		Complete(r)
}

// Reconcile starts the migrations of a draining node, or cancels the
// not-yet-started ones of a node that is no longer draining.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	node := &corev1.Node{}
	if err := r.Client.Get(ctx, req.NamespacedName, node); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !evacuation.Draining(node) {
		return reconcile.Result{}, r.cancelPending(ctx, node)
	}
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.MatchingFields{indexNodeName: node.Name}); err != nil {
		return reconcile.Result{}, err
	}
	started := 0
	for i := range pods.Items {
		pod := &pods.Items[i]
		if !evacuation.Migratable(pod) {
			continue
		}
		m, err := evacuation.Of(ctx, r.Client, pod)
		if err != nil {
			return reconcile.Result{}, err
		}
		if m != nil {
			continue // moving already, or its evacuation failed: not again
		}
		m = evacuation.NewMigration(pod)
		if err := r.Client.Create(ctx, m); err != nil {
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			return reconcile.Result{}, fmt.Errorf("starting the evacuation of pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		started++
	}
	if started > 0 {
		r.Recorder.Eventf(node, corev1.EventTypeNormal, "Evacuating",
			"node is draining: started %d live migration(s) of migratable pods (label %s=%s)", started, evacuation.LabelSourceNode, node.Name)
	}
	return reconcile.Result{}, nil
}

// cancelPending deletes the node's evacuation migrations that are still
// Pending: deleting a migration that has not checkpointed touches nothing.
// Ones already past Pending run to their end.
func (r *Reconciler) cancelPending(ctx context.Context, node *corev1.Node) error {
	var list v1.StatefulMigrationList
	if err := r.Client.List(ctx, &list, client.MatchingLabels{v1.LabelTrigger: evacuation.Trigger, evacuation.LabelSourceNode: node.Name}); err != nil {
		return err
	}
	cancelled := 0
	for i := range list.Items {
		m := &list.Items[i]
		if m.DeletionTimestamp != nil || (m.Status.Phase != "" && m.Status.Phase != v1.PhasePending) {
			continue
		}
		// Preconditions: only the version seen as Pending is deleted, so a
		// migration that started meanwhile is not cancelled by mistake.
		// A conflict is returned, and the node reconciled again.
		if err := r.Client.Delete(ctx, m, client.Preconditions{ResourceVersion: &m.ResourceVersion}); client.IgnoreNotFound(err) != nil {
			return err
		}
		cancelled++
	}
	if cancelled > 0 {
		r.Recorder.Eventf(node, corev1.EventTypeNormal, "EvacuationCancelled",
			"node is no longer draining: cancelled %d migration(s) that had not started", cancelled)
	}
	return nil
}
