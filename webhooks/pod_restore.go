package webhooks

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// restoreStatefulSetPod turns a StatefulSet's pod, created in place of a
// pod that a Sequential migration has just released, into the pod
// restored from the checkpoint (same name, ordinal, volumes and owner):
// see m.Restore (the migration controller's RestoreStatefulSetPod). It
// reports whether it did.
func (m *PodMutator) restoreStatefulSetPod(ctx context.Context, namespace string, pod *corev1.Pod) (bool, error) {
	ref := metav1.GetControllerOf(pod)
	if m.Migrations == nil || m.Restore == nil || ref == nil || ref.Kind != "StatefulSet" {
		return false, nil
	}
	var list v1.StatefulMigrationList
	if err := m.Migrations.List(ctx, &list, client.InNamespace(namespace)); err != nil {
		return false, err
	}
	if pod.Namespace == "" {
		pod.Namespace = namespace
	}
	for i := range list.Items {
		if m.Restore(pod, &list.Items[i]) {
			return true, nil
		}
	}
	return false, nil
}
