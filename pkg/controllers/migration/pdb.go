package migration

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets/status,verbs=update

// reserveDisruption takes, from every PodDisruptionBudget that selects the
// source, the one disruption the handover costs (the source stops serving
// at the fence, the target is live a few milliseconds later), exactly as
// the eviction API does: it lowers status.disruptionsAllowed and records the
// pod in status.disruptedPods, conditional on the budget's resourceVersion,
// so two migrations (or a migration and an eviction) cannot both take the
// last allowed disruption. It returns the name of a budget that allows none
// now ("" when every budget granted one, or none selects the pod).
//
// Idempotent: a budget that already lists the pod as disrupted is not
// charged again, so a reconcile that reserved and then lost its status
// write does not take two.
func (w *work) reserveDisruption(ctx context.Context, src *corev1.Pod) (string, error) {
	var pdbs policyv1.PodDisruptionBudgetList
	if err := w.r.Client.List(ctx, &pdbs, client.InNamespace(src.Namespace)); err != nil {
		return "", fmt.Errorf("listing PodDisruptionBudgets: %w", err)
	}
	for i := range pdbs.Items {
		pdb := &pdbs.Items[i]
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(src.Labels)) {
			continue
		}
		if _, taken := pdb.Status.DisruptedPods[src.Name]; taken {
			continue
		}
		// The eviction API refuses while the budget's status is older than
		// its spec; so do we.
		if pdb.Status.ObservedGeneration < pdb.Generation || pdb.Status.DisruptionsAllowed < 1 {
			return pdb.Name, nil
		}
		pdb.Status.DisruptionsAllowed--
		if pdb.Status.DisruptedPods == nil {
			pdb.Status.DisruptedPods = map[string]metav1.Time{}
		}
		pdb.Status.DisruptedPods[src.Name] = metav1.NewTime(w.r.Clock.Now())
		// Update, not patch: the resourceVersion makes it conditional.
		if err := w.r.Client.Status().Update(ctx, pdb); err != nil {
			if apierrors.IsConflict(err) {
				return "", fmt.Errorf("PodDisruptionBudget %s changed meanwhile: %w", pdb.Name, err)
			}
			return "", fmt.Errorf("taking a disruption from PodDisruptionBudget %s: %w", pdb.Name, err)
		}
	}
	return "", nil
}
