// Package migration is the StatefulMigration controller: it runs a
// migration's phases (Pending → Checkpointing → Transferring → Restoring →
// Replaying → Finalizing → Completed/Failed), each an idempotent step that
// a manager restart can re-run at any line, and rolls back on failure so
// the source keeps serving and nothing is lost.
//
// It is the only writer of a StatefulMigration's status. The node agent
// reports through annotations (v1alpha1.AnnotationAgentCheckpoint,
// AnnotationAgentImage); the replay sidecars through their control API.
package migration

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/replay"
	"github.com/ms2m/ms2m/scheduler"
)

// Sidecars is the replay sidecars' control API (replay.Client in
// production).
type Sidecars interface {
	Position(ctx context.Context, ep replay.Endpoint) (replay.Position, error)
	CaughtUp(ctx context.Context, ep replay.Endpoint, timeout time.Duration) (replay.Position, error)
	Rejoin(ctx context.Context, ep replay.Endpoint) (replay.Position, error)
	Fence(ctx context.Context, ep replay.Endpoint) (replay.Position, error)
	Handover(ctx context.Context, ep replay.Endpoint, fence map[int]int64) (replay.Position, error)
	Abort(ctx context.Context, ep replay.Endpoint) (replay.Position, error)
}

// Options are the controller's limits and defaults (manager flags).
type Options struct {
	// MaxParallel migrations in the cluster; more wait in Pending.
	MaxParallel int
	// MaxOutboundPerNode migrations leaving one node; more wait.
	MaxOutboundPerNode int
	// MaxParallelPerNamespace migrations in one namespace; more wait, so
	// one tenant cannot take every slot. 0: MaxParallel-1 (at least 1).
	MaxParallelPerNamespace int
	// Workers reconcile migrations at once: a migration whose sidecar or
	// broker does not answer holds one worker, not every migration.
	Workers int
	// DisruptionBudgetTimeout bounds how long a handover waits for a
	// PodDisruptionBudget to allow a disruption; then the migration fails
	// and the source serves on.
	DisruptionBudgetTimeout time.Duration
	// DefaultRepository receives checkpoint images when the spec names none.
	DefaultRepository string
	// SidecarControlPort is the sidecar's control API port.
	SidecarControlPort int32
	// ReplaySample is how often a replaying target is sampled.
	ReplaySample time.Duration
	// DisruptionRetry is how often a handover held by a
	// PodDisruptionBudget tries again.
	DisruptionRetry time.Duration
	// DefaultReplayCutoff ends the replay of migrations that set no
	// spec.replayCutoffSeconds.
	DefaultReplayCutoff time.Duration
	// Timeouts apply to phases the spec does not bound.
	Timeouts PhaseTimeouts
}

// PhaseTimeouts are the default phase deadlines.
type PhaseTimeouts struct {
	Checkpoint, Transfer, Restore, Finalize time.Duration
}

// DefaultOptions are the manager's defaults.
func DefaultOptions() Options {
	return Options{
		MaxParallel: 5, MaxOutboundPerNode: 2, Workers: 8, SidecarControlPort: 9901, ReplaySample: 250 * time.Millisecond,
		DisruptionRetry: time.Second, DisruptionBudgetTimeout: 10 * time.Minute,
		DefaultReplayCutoff: 120 * time.Second,
		Timeouts:            PhaseTimeouts{Checkpoint: 2 * time.Minute, Transfer: 10 * time.Minute, Restore: 5 * time.Minute, Finalize: 2 * time.Minute},
	}
}

// Reconciler runs StatefulMigrations.
type Reconciler struct {
	Client   client.Client
	Scheme   *runtime.Scheme
	Recorder record.EventRecorder
	Clock    clock.PassiveClock
	Sidecars Sidecars
	// Nodes is the scheduler extender's view, for the automatic target
	// choice (scheduler.RankNodes: the extender's own checks and scoring).
	Nodes   scheduler.State
	Opts    Options
	Metrics *Metrics

	samples    sampleCache
	admissions admissions
}

// +kubebuilder:rbac:groups=migration.ms2m.io,resources=statefulmigrations,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=migration.ms2m.io,resources=statefulmigrations/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=migration.ms2m.io,resources=statefulmigrations/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create;delete;patch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=apps,resources=replicasets;statefulsets,verbs=get;list;watch

// SetupWithManager watches StatefulMigrations, the pods they touch and
// the nodes they target.
func (r *Reconciler) SetupWithManager(mgr manager.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if err := IndexFields(context.Background(), mgr.GetFieldIndexer()); err != nil {
		return err
	}
	return ctrl.ControllerManagedBy(mgr).
		For(&v1.StatefulMigration{}).
		Named("statefulmigration").
		WithOptions(controller.Options{MaxConcurrentReconciles: max(1, r.Opts.Workers)}).
		// A migration's pods: the target (labelled) and the source (found
		// through the index on spec.sourcePod).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.migrationsOfPod)).
		// The target node going NotReady (or away) fails a migration
		// before the fence (see nodes.go).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.migrationsOnNode), ctrl.WithPredicates(readinessChanged)).
		Complete(r)
}

const indexSourcePod = "spec.sourcePod"

// IndexFields registers the cache indexes the reconciler lists
// migrations by: spec.sourcePod and status.targetNode.
func IndexFields(ctx context.Context, indexer client.FieldIndexer) error {
	if err := indexer.IndexField(ctx, &v1.StatefulMigration{}, indexSourcePod,
		func(o client.Object) []string { return []string{o.(*v1.StatefulMigration).Spec.SourcePod} }); err != nil {
		return err
	}
	return indexer.IndexField(ctx, &v1.StatefulMigration{}, indexTargetNode,
		func(o client.Object) []string {
			if n := o.(*v1.StatefulMigration).Status.TargetNode; n != "" {
				return []string{n}
			}
			return nil
		})
}

func (r *Reconciler) migrationsOfPod(ctx context.Context, o client.Object) []reconcile.Request {
	if name := o.GetLabels()[v1.LabelMigration]; name != "" {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
	}
	return r.unfinished(ctx, client.InNamespace(o.GetNamespace()), client.MatchingFields{indexSourcePod: o.GetName()})
}

// unfinished are the requests of the migrations listed with opts that
// have not ended.
func (r *Reconciler) unfinished(ctx context.Context, opts ...client.ListOption) []reconcile.Request {
	var list v1.StatefulMigrationList
	if err := r.Client.List(ctx, &list, opts...); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, m := range list.Items {
		if !m.Status.Phase.IsTerminal() {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&m)})
		}
	}
	return out
}

// Reconcile follows the usual skeleton: get, finalizer, deferred status
// patch, the step of the current phase, deletion.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (res reconcile.Result, err error) {
	m := &v1.StatefulMigration{}
	if err := r.Client.Get(ctx, req.NamespacedName, m); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	log.FromContext(ctx).V(1).Info("reconciling", "phase", m.Status.Phase)
	w := &work{r: r, m: m, written: m.DeepCopy()}
	defer func() {
		if perr := w.commit(ctx); perr != nil {
			if apierrors.IsConflict(perr) || apierrors.IsNotFound(perr) {
				res = reconcile.Result{Requeue: true}
				return
			}
			err = perr
		}
	}()

	if !m.DeletionTimestamp.IsZero() {
		return reconcile.Result{}, r.cancel(ctx, w)
	}
	if m.Status.Phase.IsTerminal() {
		return reconcile.Result{}, r.removeFinalizer(ctx, m)
	}
	if !controllerutil.ContainsFinalizer(m, v1.FinalizerRollback) {
		patch := client.MergeFrom(m.DeepCopy())
		controllerutil.AddFinalizer(m, v1.FinalizerRollback)
		if err := r.Client.Patch(ctx, m, patch); err != nil {
			return reconcile.Result{}, err
		}
		w.written.ObjectMeta = m.ObjectMeta
	}
	if m.Status.Phase == "" {
		now := r.Clock.Now()
		enterPhase(&m.Status, v1.PhasePending, now)
		st := metav1.NewTime(now)
		m.Status.StartTime = &st
	}
	_, p, ok := w.current()
	if !ok {
		return reconcile.Result{}, fmt.Errorf("phase %q is not one of strategy %q", m.Status.Phase, m.Status.Strategy)
	}
	out, err := p.run(ctx, w)
	if err != nil {
		return reconcile.Result{}, err
	}
	if out.fail != nil {
		if ctx.Err() != nil {
			// A step cut short by the manager's shutdown has not failed:
			// the next manager resumes it.
			return reconcile.Result{}, ctx.Err()
		}
		// Requeued: a rollback that found the target live leaves the
		// migration handed over, to be finished.
		return reconcile.Result{Requeue: true}, r.rollback(ctx, w, out.fail.reason, out.fail.msg)
	}
	return out.result, nil
}

// commit writes the status the reconcile computed, if it changed, then
// records the Events that report it.
func (w *work) commit(ctx context.Context) error {
	m := w.m
	if !equality.Semantic.DeepEqual(w.written.Status, m.Status) {
		m.Status.ObservedGeneration = m.Generation
		// Optimistic lock: a reconcile that read a stale migration must
		// not write over a newer status (it is requeued instead).
		if err := w.r.Client.Status().Patch(ctx, m, client.MergeFromWithOptions(w.written, client.MergeFromWithOptimisticLock{})); err != nil {
			return err
		}
		w.written = m.DeepCopy()
	}
	for _, e := range w.events {
		w.r.Recorder.Event(m, e.kind, e.reason, e.msg)
	}
	w.events = nil
	return nil
}

func (r *Reconciler) removeFinalizer(ctx context.Context, m *v1.StatefulMigration) error {
	if !controllerutil.ContainsFinalizer(m, v1.FinalizerRollback) {
		return nil
	}
	patch := client.MergeFrom(m.DeepCopy())
	controllerutil.RemoveFinalizer(m, v1.FinalizerRollback)
	return client.IgnoreNotFound(r.Client.Patch(ctx, m, patch))
}

// cancel handles deletion: an unfinished migration is rolled back (or, past
// the handover, finished) before the finalizer goes. The status that says
// so, and its Events, are written first: once the finalizer is gone the
// object may be too.
func (r *Reconciler) cancel(ctx context.Context, w *work) error {
	m := w.m
	if !controllerutil.ContainsFinalizer(m, v1.FinalizerRollback) {
		return nil
	}
	if !m.Status.Phase.IsTerminal() {
		if handedOver(m) {
			if _, p, ok := w.current(); ok {
				if _, err := p.run(ctx, w); err != nil {
					return err
				}
			}
		} else if err := r.rollback(ctx, w, v1.ReasonCancelled, "the StatefulMigration was deleted"); err != nil {
			return err
		} else if handedOver(m) {
			// The target answered the rollback's abort as live: too late
			// to cancel; the next pass finishes the migration.
			if err := w.commit(ctx); err != nil {
				return err
			}
			return fmt.Errorf("cancel: target %s went live before the rollback; finishing the migration", m.Status.TargetPod)
		}
	}
	if err := w.commit(ctx); err != nil {
		return err
	}
	return r.removeFinalizer(ctx, m)
}
