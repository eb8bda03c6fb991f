// Package evacuation is what the eviction webhook and the evacuation
// controller share: which pods move when their node is drained, the one
// StatefulMigration that moves each of them, and how to find it again.
//
// Exactly one migration per pod however many evictions (and node events)
// arrive: its name is derived from the pod's UID, so a second create is an
// AlreadyExists, not a second migration.
package evacuation

import (
	"context"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

const (
	// Trigger is the LabelTrigger value of the migrations started here.
	Trigger = "evacuation"
	// TriggerUser is the LabelTrigger value of migrations a user created.
	TriggerUser = "user"
	// TaintDrain on a node asks ms2m to move its migratable pods away
	// without cordoning it (any effect; NoSchedule is the usual one).
	TaintDrain = "ms2m.io/drain"
	// LabelSourceNode on an evacuation's migration names the node it
	// empties, so the node's migrations are one label query away.
	LabelSourceNode = "migration.ms2m.io/source-node"
)

// Migratable says whether ms2m moves pod live instead of letting it be
// evicted: it opted in, the webhook prepared it, it runs and is not going
// away, and it is not itself the target of a migration in progress.
func Migratable(pod *corev1.Pod) bool {
	return pod.Annotations[v1.AnnotationMigratable] == "true" &&
		pod.Annotations[v1.AnnotationCheckpointRestore] == "enabled" &&
		pod.Spec.NodeName != "" &&
		pod.DeletionTimestamp == nil &&
		pod.Status.Phase == corev1.PodRunning &&
		pod.Labels[v1.LabelMigration] == ""
}

// Draining says whether node asks for its pods to be moved away: it is
// cordoned, or tainted with TaintDrain.
func Draining(node *corev1.Node) bool {
	if node.Spec.Unschedulable {
		return true
	}
	for _, t := range node.Spec.Taints {
		if t.Key == TaintDrain {
			return true
		}
	}
	return false
}

// MigrationName is the name of the migration that evacuates pod: the
// pod's name and the start of its UID, so a pod recreated under the same
// name gets a migration of its own.
func MigrationName(pod *corev1.Pod) string {
	suffix := "-evac-" + strings.ToLower(string(pod.UID))
	if len(suffix) > 11 {
		suffix = suffix[:11]
	}
	base := pod.Name
	if len(base)+len(suffix) > 253 {
		base = base[:253-len(suffix)]
	}
	return base + suffix
}

// NewMigration is the migration that evacuates pod: no fixed target (the
// controller picks one with the extender's scoring), labelled with the
// trigger and the node it empties.
func NewMigration(pod *corev1.Pod) *v1.StatefulMigration {
	return &v1.StatefulMigration{
		ObjectMeta: metav1.ObjectMeta{
			Name: MigrationName(pod), Namespace: pod.Namespace,
			Labels: map[string]string{v1.LabelTrigger: Trigger, LabelSourceNode: pod.Spec.NodeName},
		},
		Spec: v1.StatefulMigrationSpec{SourcePod: pod.Name},
	}
}

// Of returns the migration that concerns pod now: one still running (by
// anyone), else the evacuation's own for this pod (which may have
// finished), else nil.
func Of(ctx context.Context, c client.Reader, pod *corev1.Pod) (*v1.StatefulMigration, error) {
	var list v1.StatefulMigrationList
	if err := c.List(ctx, &list, client.InNamespace(pod.Namespace)); err != nil {
		return nil, err
	}
	var own *v1.StatefulMigration
	for i := range list.Items {
		m := &list.Items[i]
		if m.Spec.SourcePod != pod.Name {
			continue
		}
		if !m.Status.Phase.IsTerminal() && m.DeletionTimestamp == nil {
			return m, nil
		}
		if m.Name == MigrationName(pod) {
			own = m
		}
	}
	return own, nil
}
