package images

import (
	"context"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// AnnotationImagesDeleted lists, on a failed StatefulMigration, the
// checkpoint images (comma-separated) the manager deleted, or gave up
// deleting, for it: each is deleted once.
const AnnotationImagesDeleted = "migration.ms2m.io/checkpoint-images-deleted"

// FailedMigrations deletes the checkpoint images of failed migrations
// that no pod ever ran from: a migration that failed after its push but
// before its target was created, or whose agent finished a push after the
// Transferring deadline had failed it. An image some pod runs from, or
// ran from, is the pod's finalizer's to delete (Reconciler).
type FailedMigrations struct {
	*Reconciler
}

// +kubebuilder:rbac:groups=migration.ms2m.io,resources=statefulmigrations,verbs=get;list;watch;patch

// SetupWithManager watches failed migrations. Reconciler.SetupWithManager
// registers the indexes it uses and must run first.
func (r *FailedMigrations) SetupWithManager(mgr manager.Manager) error {
	return ctrl.ControllerManagedBy(mgr).
		Named("failedcheckpointimage").
		For(&v1.StatefulMigration{}, ctrl.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.(*v1.StatefulMigration).Status.Phase == v1.PhaseFailed
		}))).
		Complete(r)
}

// Reconcile deletes the failed migration's images no pod runs from.
func (r *FailedMigrations) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	m := &v1.StatefulMigration{}
	if err := r.Client.Get(ctx, req.NamespacedName, m); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if m.Status.Phase != v1.PhaseFailed || r.Opts.Retention != RetainNone {
		return reconcile.Result{}, nil
	}
	done := strings.Split(m.Annotations[AnnotationImagesDeleted], ",")
	for _, ref := range r.imagesOf(m) {
		if slices.Contains(done, ref) {
			continue
		}
		var pods corev1.PodList
		if err := r.Client.List(ctx, &pods, client.MatchingFields{indexImage: ref}); err != nil {
			return reconcile.Result{}, err
		}
		if len(pods.Items) > 0 {
			continue // a pod's finalizer deletes it
		}
		digest, err := r.reference(ref)
		if err == nil {
			err = r.Delete(ctx, digest)
		}
		if err != nil {
			if m.Status.CompletionTime != nil && r.Clock.Since(m.Status.CompletionTime.Time) < r.Opts.GiveUpAfter {
				log.FromContext(ctx).Error(err, "deleting a failed migration's checkpoint image", "image", ref)
				return reconcile.Result{}, err
			}
			r.Recorder.Eventf(m, corev1.EventTypeWarning, "CheckpointImageNotDeleted",
				"the migration failed and no pod runs from checkpoint image %s, which was not deleted; the registry's own retention must remove it: %v", ref, err)
			r.Metrics.count("failed")
		} else {
			r.Recorder.Eventf(m, corev1.EventTypeNormal, "CheckpointImageDeleted", "the migration failed and no pod runs from checkpoint image %s: deleted it from its registry", ref)
			r.Metrics.count("deleted")
		}
		if err := r.markDeleted(ctx, m, ref); err != nil {
			return reconcile.Result{}, err
		}
	}
	return reconcile.Result{}, nil
}

// markDeleted records on a failed migration that its image ref was
// deleted (or given up on), so that it is not deleted again.
func (r *Reconciler) markDeleted(ctx context.Context, m *v1.StatefulMigration, ref string) error {
	if m.Status.Phase != v1.PhaseFailed || slices.Contains(strings.Split(m.Annotations[AnnotationImagesDeleted], ","), ref) {
		return nil
	}
	patch := client.MergeFrom(m.DeepCopy())
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	m.Annotations[AnnotationImagesDeleted] = strings.TrimPrefix(m.Annotations[AnnotationImagesDeleted]+","+ref, ",")
	return client.IgnoreNotFound(r.Client.Patch(ctx, m, patch))
}

// imagesOf are the checkpoint images pushed for m: the one in its status
// and the one its agent reported, which may have come after the failure.
// The agent's report is checked before it is believed: a digest in the
// migration's own repository, the one the agent pushed to.
func (r *FailedMigrations) imagesOf(m *v1.StatefulMigration) []string {
	var out []string
	if m.Status.CheckpointImage != "" {
		out = append(out, m.Status.CheckpointImage)
	}
	res, err := v1.AgentResultOf(m, v1.AnnotationAgentImage)
	if err == nil && res != nil && res.Image != "" && !slices.Contains(out, res.Image) {
		repo := m.Spec.CheckpointImageRepository
		if repo == "" {
			repo = r.Opts.DefaultRepository
		}
		if inRepository(res.Image, repo) {
			out = append(out, res.Image)
		}
	}
	return out
}
