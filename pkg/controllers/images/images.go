// Package images deletes checkpoint images once no pod runs from them.
//
// A checkpoint image holds a process's whole memory, its secrets
// included, so it should not outlive its use; but a restored pod needs it
// for as long as it exists: a container that restarts is created from it
// again, and a node that lost it pulls it again. Every restored pod
// therefore carries the image it was restored from
// (v1alpha1.AnnotationCheckpointImage) and a finalizer
// (v1alpha1.FinalizerCheckpointImage) that holds the pod's deletion until
// this controller has deleted the image from its registry, or decided to
// keep it (--checkpoint-image-retention, another pod still running from
// it, an image it cannot vouch for). A registry that does not answer
// holds the pod for at most Options.GiveUpAfter; then the finalizer goes
// with a Warning, and the registry's own retention is the backstop.
package images

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/checkpoint"
)

// Retention says which checkpoint images the manager deletes.
type Retention string

const (
	// RetainNone deletes every checkpoint image once no pod runs from it.
	RetainNone Retention = "delete"
	// RetainFailed keeps the images of failed migrations, for debugging
	// (the registry's own retention removes them).
	RetainFailed Retention = "keep-failed"
	// RetainAll deletes none.
	RetainAll Retention = "keep"
)

// ParseRetention reads --checkpoint-image-retention.
func ParseRetention(s string) (Retention, error) {
	switch r := Retention(s); r {
	case RetainNone, RetainFailed, RetainAll:
		return r, nil
	}
	return "", fmt.Errorf("--checkpoint-image-retention must be %s, %s or %s, got %q", RetainNone, RetainFailed, RetainAll, s)
}

// Options are the controller's settings (manager flags).
type Options struct {
	Retention Retention
	// DefaultRepository is the manager's --checkpoint-image-repository:
	// an image whose migration is gone is deleted only from there.
	DefaultRepository string
	// Registries are where images may be deleted, and how they are
	// reached.
	Registries checkpoint.Registries
	// GiveUpAfter bounds how long a deleted pod waits for its image's
	// deletion.
	GiveUpAfter time.Duration
	// Wait is how often a pod whose migration has not ended is looked at
	// again.
	Wait time.Duration
}

// DefaultOptions are the manager's defaults.
func DefaultOptions() Options {
	return Options{Retention: RetainNone, GiveUpAfter: 2 * time.Minute, Wait: time.Second}
}

// Deleter deletes an image from its registry (checkpoint.Delete).
type Deleter func(ctx context.Context, ref name.Digest) error

// Reconciler holds restored pods' deletion until their checkpoint image is
// deleted.
type Reconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	Clock    clock.PassiveClock
	Opts     Options
	Delete   Deleter
	Metrics  *Metrics
}

// Indexes: pods by the checkpoint image they were restored from,
// migrations by the one they recorded.
const (
	indexImage          = "metadata.annotations.checkpointImage"
	indexMigrationImage = "status.checkpointImage"
)

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=migration.ms2m.io,resources=statefulmigrations,verbs=get;list;watch

// SetupWithManager watches the pods that carry the finalizer.
func (r *Reconciler) SetupWithManager(mgr manager.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &corev1.Pod{}, indexImage, func(o client.Object) []string {
		if ref := o.GetAnnotations()[v1.AnnotationCheckpointImage]; ref != "" {
			return []string{ref}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1.StatefulMigration{}, indexMigrationImage, func(o client.Object) []string {
		if ref := o.(*v1.StatefulMigration).Status.CheckpointImage; ref != "" {
			return []string{ref}
		}
		return nil
	}); err != nil {
		return err
	}
	return ctrl.ControllerManagedBy(mgr).
		Named("checkpointimage").
		For(&corev1.Pod{}, ctrl.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return controllerutil.ContainsFinalizer(o, v1.FinalizerCheckpointImage) && o.GetDeletionTimestamp() != nil
		}))).
		Complete(r)
}

// verdict is what becomes of a deleted pod's checkpoint image.
type verdict int

const (
	deleteImage verdict = iota
	keepImage
	waitForMigration
)

// Reconcile deletes (or keeps) the image of a deleted restored pod, then
// lets the pod go.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	pod := &corev1.Pod{}
	if err := r.Client.Get(ctx, req.NamespacedName, pod); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if pod.DeletionTimestamp == nil || !controllerutil.ContainsFinalizer(pod, v1.FinalizerCheckpointImage) {
		return reconcile.Result{}, nil
	}
	ref := pod.Annotations[v1.AnnotationCheckpointImage]
	v, m, why, err := r.decide(ctx, pod, ref)
	if err != nil {
		return reconcile.Result{}, err
	}
	about := client.Object(pod)
	if m != nil {
		about = m
	}
	switch v {
	case waitForMigration:
		r.Recorder.Eventf(about, corev1.EventTypeNormal, "CheckpointImageWaiting", "pod %s is being deleted; its checkpoint image %s waits: %s", pod.Name, ref, why)
		return reconcile.Result{RequeueAfter: r.Opts.Wait}, nil
	case keepImage:
		r.Recorder.Eventf(about, corev1.EventTypeNormal, "CheckpointImageKept", "pod %s is gone; checkpoint image %s kept: %s", pod.Name, ref, why)
		r.Metrics.count("kept")
	case deleteImage:
		digest, err := r.reference(ref)
		if err == nil {
			err = r.Delete(ctx, digest)
		}
		if err != nil {
			if waited := r.Clock.Since(pod.DeletionTimestamp.Time); waited < r.Opts.GiveUpAfter {
				log.FromContext(ctx).Error(err, "deleting the checkpoint image; the pod's deletion waits", "image", ref, "waited", waited)
				return reconcile.Result{}, err
			}
			r.Recorder.Eventf(about, corev1.EventTypeWarning, "CheckpointImageNotDeleted",
				"pod %s is gone; checkpoint image %s was not deleted after %s, the pod is let go and the registry's own retention must remove the image: %v",
				pod.Name, ref, r.Opts.GiveUpAfter, err)
			r.Metrics.count("failed")
			break
		}
		r.Recorder.Eventf(about, corev1.EventTypeNormal, "CheckpointImageDeleted", "pod %s is gone and no pod runs from checkpoint image %s: deleted it from its registry", pod.Name, ref)
		r.Metrics.count("deleted")
		if m != nil {
			if err := r.markDeleted(ctx, m, ref); err != nil {
				return reconcile.Result{}, err
			}
		}
	}
	patch := client.MergeFrom(pod.DeepCopy())
	controllerutil.RemoveFinalizer(pod, v1.FinalizerCheckpointImage)
	return reconcile.Result{}, client.IgnoreNotFound(r.Client.Patch(ctx, pod, patch))
}

// decide says what becomes of ref, which the deleted pod ran from, and
// why; m is the migration that recorded it, if it still exists.
//
// The annotation is written by ms2m but lives on a tenant's pod, where
// anyone who may edit the pod can change it. So an image is deleted only
// when no other pod names it, and only if a migration in the pod's
// namespace recorded it in its status (written by the controller alone)
// or, once that migration is gone, if it lies in the default checkpoint
// repository.
// A tenant can thus only make the manager delete a checkpoint image that
// no pod runs from: one it would delete anyway.
func (r *Reconciler) decide(ctx context.Context, pod *corev1.Pod, ref string) (verdict, *v1.StatefulMigration, string, error) {
	if ref == "" {
		return keepImage, nil, "the pod names no checkpoint image", nil
	}
	var m *v1.StatefulMigration
	var recorded v1.StatefulMigrationList
	if err := r.Client.List(ctx, &recorded, client.InNamespace(pod.Namespace), client.MatchingFields{indexMigrationImage: ref}); err != nil {
		return 0, nil, "", err
	}
	if len(recorded.Items) > 0 {
		m = &recorded.Items[0]
	}
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.MatchingFields{indexImage: ref}); err != nil {
		return 0, nil, "", err
	}
	for _, p := range pods.Items {
		if p.UID != pod.UID && p.DeletionTimestamp == nil {
			return keepImage, m, fmt.Sprintf("pod %s/%s still runs from it", p.Namespace, p.Name), nil
		}
	}
	switch {
	case r.Opts.Retention == RetainAll:
		return keepImage, m, "--checkpoint-image-retention=" + string(RetainAll), nil
	case m != nil && !m.Status.Phase.IsTerminal():
		// A rollback deletes the target before it records the failure.
		return waitForMigration, m, fmt.Sprintf("migration %s is %s", m.Name, m.Status.Phase), nil
	case m != nil && m.Status.Phase == v1.PhaseFailed && r.Opts.Retention == RetainFailed:
		return keepImage, m, fmt.Sprintf("migration %s failed and --checkpoint-image-retention=%s keeps it for debugging", m.Name, RetainFailed), nil
	case m == nil && !inRepository(ref, r.Opts.DefaultRepository):
		return keepImage, nil, fmt.Sprintf("no StatefulMigration in %s records it and it is not in the default checkpoint repository %q, so the manager cannot vouch that it is a checkpoint image",
			pod.Namespace, r.Opts.DefaultRepository), nil
	}
	if _, err := r.reference(ref); err != nil {
		return keepImage, m, err.Error(), nil
	}
	return deleteImage, m, "", nil
}

// inRepository reports whether ref is a digest in repository repo.
func inRepository(ref, repo string) bool {
	d, err := name.NewDigest(ref)
	if err != nil || repo == "" {
		return false
	}
	want, err := checkpoint.ParseRepository(repo)
	return err == nil && d.Context().Name() == want.Name()
}

// reference parses ref as a digest in an allowed registry.
func (r *Reconciler) reference(ref string) (name.Digest, error) {
	parsed, err := r.Opts.Registries.Reference(ref)
	if err != nil {
		return name.Digest{}, err
	}
	d, ok := parsed.(name.Digest)
	if !ok || !strings.Contains(ref, "@sha256:") {
		return name.Digest{}, fmt.Errorf("checkpoint image %q is not pinned by digest", ref)
	}
	return d, nil
}

// Metrics count what became of checkpoint images.
type Metrics struct {
	deletions *prometheus.CounterVec
}

// NewMetrics registers ms2m_checkpoint_image_deletions_total with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{deletions: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ms2m_checkpoint_image_deletions_total",
		Help: "Checkpoint images of deleted restored pods, by result: deleted from the registry, kept (retention, still in use, not vouched for), failed (the registry did not delete it in time).",
	}, []string{"result"})}
	reg.MustRegister(m.deletions)
	return m
}

func (m *Metrics) count(result string) {
	if m != nil {
		m.deletions.WithLabelValues(result).Inc()
	}
}
