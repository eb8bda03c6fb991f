// Package migrationclient is how programs outside the controller start a
// StatefulMigration, follow it and describe it: the kubectl plugin, the demo
// and the e2e specs share it, so the progress a user reads in a terminal is
// the progress the tests assert.
package migrationclient

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/clientconfig"
)

// NewScheme knows the core Kubernetes types and StatefulMigrations.
func NewScheme() *runtime.Scheme {
	s, err := clientconfig.Scheme()
	if err != nil {
		panic(err) // only on a programming error in the registered types
	}
	return s
}

// New returns a client that can watch as well as read and write.
func New(cfg *rest.Config) (client.WithWatch, error) {
	return client.NewWithWatch(cfg, client.Options{Scheme: NewScheme()})
}

// Request is a migration to start.
type Request struct {
	Namespace string
	// Pod is the source pod, in Namespace.
	Pod string
	// TargetNode is where to move the pod; empty lets the controller
	// choose the best capable node.
	TargetNode string
	// Name of the StatefulMigration. When empty the API server generates
	// one from GenerateName (default: the pod's name and a dash).
	Name         string
	GenerateName string
}

// Object is the StatefulMigration that r asks for.
func (r Request) Object() *v1.StatefulMigration {
	m := &v1.StatefulMigration{
		ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: r.Name},
		Spec:       v1.StatefulMigrationSpec{SourcePod: r.Pod, TargetNode: r.TargetNode},
	}
	if r.Name == "" {
		m.GenerateName = r.GenerateName
		if m.GenerateName == "" {
			m.GenerateName = r.Pod + "-"
		}
	}
	return m
}

// Create starts the migration r asks for. A source pod that does not exist
// is refused here, before anything is created, with an error that names
// it; a caller not allowed to read pods leaves that check to the
// controller.
func Create(ctx context.Context, c client.Client, r Request) (*v1.StatefulMigration, error) {
	pod := &corev1.Pod{}
	err := c.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: r.Pod}, pod)
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("pod %q not found in namespace %q: nothing to migrate", r.Pod, r.Namespace)
	case err != nil && !apierrors.IsForbidden(err):
		return nil, fmt.Errorf("reading pod %s/%s: %w", r.Namespace, r.Pod, err)
	case err == nil && pod.DeletionTimestamp != nil:
		return nil, fmt.Errorf("pod %s/%s is being deleted: nothing to migrate", r.Namespace, r.Pod)
	}
	m := r.Object()
	if err := c.Create(ctx, m); err != nil {
		return nil, fmt.Errorf("creating the StatefulMigration of pod %s/%s: %w", r.Namespace, r.Pod, err)
	}
	return m, nil
}
