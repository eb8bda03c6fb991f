package webhooks

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/evacuation"
)

// PodEvictionPath is where the API server sends pod evictions.
const PodEvictionPath = "/validate-v1-pod-eviction"

// The eviction webhook turns `kubectl drain` of a migratable pod into a live
// migration: it answers 429 Too Many Requests (which drain retries) and
// starts the pod's evacuation migration; once the source pod is gone the
// retried eviction finds nothing left and drain moves on.
//
// failurePolicy=Ignore, deliberately: the API server sends every eviction
// outside kube-system here (Scopes; the Eviction does not carry the pod's
// annotations, so no match condition can pick out migratable pods), so Fail
// would stop every drain while the manager is down. With the manager down a
// migratable pod is evicted as an ordinary one: its PodDisruptionBudget
// still holds, and no message is lost (the group resumes from its commits),
// only the in-memory state is rebuilt.
//
// +kubebuilder:webhook:path=/validate-v1-pod-eviction,mutating=false,failurePolicy=ignore,sideEffects=NoneOnDryRun,groups="",resources=pods/eviction,verbs=create,versions=v1,name=evictions.ms2m.io,admissionReviewVersions=v1,timeoutSeconds=5

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=migration.ms2m.io,resources=statefulmigrations,verbs=get;list;watch;create

// EvictionFallback is what happens to the eviction of a pod whose
// evacuation migration failed.
type EvictionFallback string

const (
	// FallbackDeny keeps the pod serving and keeps refusing its eviction
	// until the failed migration is deleted (which lets a new one start) or
	// the fallback is changed. The default: nothing is lost.
	FallbackDeny EvictionFallback = "deny"
	// FallbackAllow lets the eviction through: the pod is deleted as an
	// ordinary one and its replacement rebuilds its state.
	FallbackAllow EvictionFallback = "allow"
)

// ParseEvictionFallback validates a --eviction-fallback value.
func ParseEvictionFallback(s string) (EvictionFallback, error) {
	switch f := EvictionFallback(s); f {
	case FallbackDeny, FallbackAllow:
		return f, nil
	}
	return "", fmt.Errorf("--eviction-fallback must be %q or %q, got %q", FallbackDeny, FallbackAllow, s)
}

// PodEvictor decides evictions of migratable pods.
type PodEvictor struct {
	// Reader looks up pods and migrations (the manager's cache).
	Reader client.Reader
	// Writer creates the evacuation migrations.
	Writer   client.Writer
	Fallback EvictionFallback
}

// Handle implements admission.Handler.
func (e *PodEvictor) Handle(ctx context.Context, req admission.Request) admission.Response {
	pod := &corev1.Pod{}
	if err := e.Reader.Get(ctx, client.ObjectKey{Namespace: req.Namespace, Name: req.Name}, pod); err != nil {
		if apierrors.IsNotFound(err) {
			return admission.Allowed("")
		}
		// An eviction that cannot be judged is retried by drain, not let
		// through: the pod may be migratable.
		return tooMany(fmt.Sprintf("ms2m could not look up pod %s/%s: %v", req.Namespace, req.Name, err))
	}
	if pod.Annotations[v1.AnnotationMigratable] != "true" {
		return admission.Allowed("")
	}
	m, err := evacuation.Of(ctx, e.Reader, pod)
	if err != nil {
		return tooMany(fmt.Sprintf("ms2m could not look up the migrations of pod %s: %v", pod.Name, err))
	}
	if m != nil && !m.Status.Phase.IsTerminal() && m.DeletionTimestamp == nil {
		return tooMany(fmt.Sprintf("pod %s is being migrated live by StatefulMigration %s (phase %s); it leaves the node when the migration completes",
			pod.Name, m.Name, phaseOf(m)))
	}
	if !evacuation.Migratable(pod) {
		// Not running, already going away, or a migration's target: an
		// ordinary eviction.
		return admission.Allowed("")
	}
	if m != nil && m.Status.Phase == v1.PhaseFailed {
		if e.Fallback == FallbackAllow {
			return admission.Allowed("").WithWarnings(fmt.Sprintf(
				"live migration %s of pod %s failed (%s); evicting it as an ordinary pod (--eviction-fallback=allow)", m.Name, pod.Name, m.Status.FailureReason))
		}
		return tooMany(fmt.Sprintf("live migration %s of pod %s failed: %s; the pod keeps serving and its eviction is refused (--eviction-fallback=deny); delete StatefulMigration %s to try again",
			m.Name, pod.Name, m.Status.FailureReason, m.Name))
	}
	m = evacuation.NewMigration(pod)
	if dryRun(req) {
		return tooMany(fmt.Sprintf("pod %s is migratable: its eviction would start live migration %s (dry run: nothing started)", pod.Name, m.Name))
	}
	if err := e.Writer.Create(ctx, m); err != nil && !apierrors.IsAlreadyExists(err) {
		return tooMany(fmt.Sprintf("ms2m could not start the live migration of pod %s: %v", pod.Name, err))
	}
	return tooMany(fmt.Sprintf("pod %s is migratable: started live migration %s; the pod leaves the node when it completes", pod.Name, m.Name))
}

// dryRun says whether the eviction only asks: the request is a dry run, or
// (as kubectl drain --dry-run=server sends it) the Eviction's own
// deleteOptions are.
func dryRun(req admission.Request) bool {
	if ptr.Deref(req.DryRun, false) {
		return true
	}
	// policy/v1 and v1beta1 Evictions share this shape.
	var ev struct {
		DeleteOptions *metav1.DeleteOptions `json:"deleteOptions"`
	}
	if err := json.Unmarshal(req.Object.Raw, &ev); err != nil || ev.DeleteOptions == nil {
		return false
	}
	return len(ev.DeleteOptions.DryRun) > 0
}

func phaseOf(m *v1.StatefulMigration) v1.Phase {
	if m.Status.Phase == "" {
		return v1.PhasePending
	}
	return m.Status.Phase
}

// tooMany refuses with 429 Too Many Requests, which `kubectl drain` (and
// every eviction client) retries.
func tooMany(msg string) admission.Response {
	return admission.Response{AdmissionResponse: admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusTooManyRequests, Reason: metav1.StatusReasonTooManyRequests, Message: msg,
	}}}
}
