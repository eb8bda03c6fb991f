package webhooks

import (
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// Names of the webhooks, as the API server reports them in its errors and
// in its apiserver_admission_webhook_* metrics.
const (
	PodMutationWebhook = "pods.ms2m.io"
	PodEvictionWebhook = "evictions.ms2m.io"
)

// PodMutationCondition is the CEL the API server evaluates before it calls
// the pod mutation webhook: only a pod that carries ms2m.io/migratable
// with any value but "false" reaches the manager, which is exactly the pod
// Handle acts on (NeedsMutation): an opted-in pod, a migration's target
// (it carries its source's annotations), a StatefulSet's pod recreated to
// be restored (its template opted in), and a typo ("yes") that Handle
// refuses naming the annotation. Every other pod in the cluster is admitted
// without calling the manager, so failurePolicy Fail makes the manager a
// single point of failure only for the pods that need it.
const PodMutationCondition = "has(object.metadata.annotations) && '" + v1.AnnotationMigratable + "' in object.metadata.annotations" +
	" && object.metadata.annotations['" + v1.AnnotationMigratable + "'] != 'false'"

// NeedsMutation is Handle's own test of whether a pod is its business;
// PodMutationCondition says the same in CEL (a test holds them equal
// through a real API server).
func NeedsMutation(pod *corev1.Pod) bool {
	v, ok := pod.Annotations[v1.AnnotationMigratable]
	return ok && v != "false"
}

// Scope is what the API server checks before it calls a webhook, beyond
// the rules controller-gen writes from the +kubebuilder:webhook markers
// (which can say neither). hack/webhook-scope writes it into
// config/webhook/manifests.yaml after controller-gen; the chart copies it.
type Scope struct {
	NamespaceSelector *metav1.LabelSelector
	MatchConditions   []admissionregistrationv1.MatchCondition
}

// notKubeSystem keeps both webhooks off kube-system: the cluster's own pods
// and their evictions never wait on the manager.
var notKubeSystem = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
	Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpNotIn, Values: []string{metav1.NamespaceSystem},
}}}

// Scopes are the webhooks' scopes, by webhook name. The eviction webhook
// has no match condition: its object is an Eviction, which does not carry
// the pod's annotations.
func Scopes() map[string]Scope {
	return map[string]Scope{
		PodMutationWebhook: {
			NamespaceSelector: notKubeSystem.DeepCopy(),
			MatchConditions:   []admissionregistrationv1.MatchCondition{{Name: "ms2m-migratable", Expression: PodMutationCondition}},
		},
		PodEvictionWebhook: {NamespaceSelector: notKubeSystem.DeepCopy()},
	}
}
