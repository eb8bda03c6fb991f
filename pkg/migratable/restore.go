package migratable

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// RestoreStatefulSetPodFrom restores pod (RestoreStatefulSetPod) when one
// of the namespace's migrations, listed with migrations, is the Sequential
// migration waiting for it. It reports whether it did.
func RestoreStatefulSetPodFrom(ctx context.Context, migrations client.Reader, namespace string, pod *corev1.Pod) (bool, error) {
	ref := metav1.GetControllerOf(pod)
	if migrations == nil || ref == nil || ref.Kind != "StatefulSet" {
		return false, nil
	}
	var list v1.StatefulMigrationList
	if err := migrations.List(ctx, &list, client.InNamespace(namespace)); err != nil {
		return false, err
	}
	if pod.Namespace == "" {
		pod.Namespace = namespace
	}
	for i := range list.Items {
		if RestoreStatefulSetPod(pod, &list.Items[i]) {
			return true, nil
		}
	}
	return false, nil
}
