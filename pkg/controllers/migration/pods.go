package migration

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/replay"
)

// Annotations the controller keeps on a target pod until the handover, so
// the final identity can be applied even after the source is gone.
const (
	annotationSourceLabels = "migration.ms2m.io/source-labels"
	annotationSourceOwners = "migration.ms2m.io/source-owners"
	// annotationDeletionCost makes a ReplicaSet that briefly owns both the
	// source and the target remove the source.
	annotationDeletionCost = "controller.kubernetes.io/pod-deletion-cost"
)

func targetName(m *v1.StatefulMigration) string {
	suffix := "-ms2m-" + strings.ToLower(string(m.UID))[:5]
	base := m.Spec.SourcePod
	if len(base)+len(suffix) > 63 {
		base = base[:63-len(suffix)]
	}
	return base + suffix
}

// targetPodSkeleton is the target pod as it would be scheduled: the
// source's spec pinned to no node, marked with the source node for the
// extender's checks.
func targetPodSkeleton(m *v1.StatefulMigration, src *corev1.Pod) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: targetName(m), Namespace: src.Namespace,
			Labels:      map[string]string{v1.LabelMigration: m.Name},
			Annotations: map[string]string{},
		},
		Spec: *src.Spec.DeepCopy(),
	}
	for k, v := range src.Annotations {
		p.Annotations[k] = v
	}
	p.Annotations[v1.AnnotationSourceNode] = src.Spec.NodeName
	p.Annotations[v1.AnnotationMigrationName] = m.Name
	p.Spec.NodeName = ""
	p.Spec.Affinity = unpinned(p.Spec.Affinity, src.Spec.NodeName)
	return p
}

// buildTarget is the target pod: the source's spec with the app container
// started from the checkpoint image, the sidecar replaying from the
// checkpoint offsets, pinned to the target node, and, until the handover,
// outside its owner's selector so no ReplicaSet counts or adopts it.
func buildTarget(m *v1.StatefulMigration, src *corev1.Pod, selectorKeys []string, app string) (*corev1.Pod, error) {
	p := targetPodSkeleton(m, src)
	for k, v := range src.Labels {
		if !contains(selectorKeys, k) {
			p.Labels[k] = v
		}
	}
	labels, err := json.Marshal(src.Labels)
	if err != nil {
		return nil, err
	}
	owners, err := json.Marshal(src.OwnerReferences)
	if err != nil {
		return nil, err
	}
	p.Annotations[annotationSourceLabels] = string(labels)
	p.Annotations[annotationSourceOwners] = string(owners)
	p.OwnerReferences = []metav1.OwnerReference{{
		APIVersion: v1.GroupVersion.String(), Kind: "StatefulMigration", Name: m.Name, UID: m.UID, Controller: ptr.To(true),
	}}
	restoreInto(p, m, app)
	return p, nil
}

// restoreInto makes p a migration's restored pod: its app container starts
// from the checkpoint image, its sidecar replays from the checkpoint
// offsets, it is pinned to the target node (replacing an earlier
// migration's pin) and marked with the migration.
func restoreInto(p *corev1.Pod, m *v1.StatefulMigration, app string) {
	if p.Labels == nil {
		p.Labels = map[string]string{}
	}
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	p.Labels[v1.LabelMigration] = m.Name
	p.Annotations[v1.AnnotationMigrationName] = m.Name
	p.Annotations[v1.AnnotationSourceNode] = m.Status.SourceNode
	p.Spec.Affinity = pinned(unpinned(p.Spec.Affinity, m.Status.SourceNode), m.Status.TargetNode)
	for i := range p.Spec.Containers {
		c := &p.Spec.Containers[i]
		switch c.Name {
		case app:
			c.Image = m.Status.CheckpointImage
		case v1.SidecarContainerName:
			c.Env = append(withoutEnv(c.Env, replay.EnvReplayFrom), corev1.EnvVar{Name: replay.EnvReplayFrom, Value: replayFromEnv(m.Status.CheckpointOffsets)})
		}
	}
}

// RestoreStatefulSetPod turns the pod a StatefulSet creates in place of a
// migration's source (same name) into the restored pod, when m is the
// Sequential migration waiting for it; it reports whether it did. The pod
// mutation webhook calls it, so the StatefulSet's own pod, with its name,
// ordinal, volumes and owner, is the one restored from the checkpoint.
func RestoreStatefulSetPod(p *corev1.Pod, m *v1.StatefulMigration) bool {
	ref := metav1.GetControllerOf(p)
	if ref == nil || ref.Kind != "StatefulSet" || m.Spec.SourcePod != p.Name || m.Namespace != p.Namespace ||
		m.Status.Strategy != v1.StrategySequential || m.Status.Phase != v1.PhaseRestoring ||
		m.Status.CheckpointImage == "" || len(m.Status.FenceOffsets) == 0 || m.DeletionTimestamp != nil {
		return false
	}
	apps := appContainers(m, p)
	if len(apps) == 0 {
		return false
	}
	restoreInto(p, m, apps[0])
	return true
}

// unpinned drops the requirements that pin a pod to node alone: the pin an
// earlier migration gave the source (or the user's own pin to the node it
// is being moved off, which no migration could honour). Anything else the
// pod requires is kept.
func unpinned(a *corev1.Affinity, node string) *corev1.Affinity {
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return a
	}
	a = a.DeepCopy()
	sel := a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution
	for i := range sel.NodeSelectorTerms {
		t := &sel.NodeSelectorTerms[i]
		t.MatchExpressions = slices.DeleteFunc(t.MatchExpressions, func(r corev1.NodeSelectorRequirement) bool {
			return r.Key == corev1.LabelHostname && r.Operator == corev1.NodeSelectorOpIn && len(r.Values) == 1 && r.Values[0] == node
		})
	}
	return a
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func withoutEnv(env []corev1.EnvVar, name string) []corev1.EnvVar {
	out := env[:0:0]
	for _, e := range env {
		if e.Name != name {
			out = append(out, e)
		}
	}
	return out
}

// pinned requires the node, keeping the pod's own required terms (ANDed).
func pinned(a *corev1.Affinity, node string) *corev1.Affinity {
	a = a.DeepCopy()
	if a == nil {
		a = &corev1.Affinity{}
	}
	if a.NodeAffinity == nil {
		a.NodeAffinity = &corev1.NodeAffinity{}
	}
	req := corev1.NodeSelectorRequirement{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{node}}
	sel := a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution
	if sel == nil || len(sel.NodeSelectorTerms) == 0 {
		sel = &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{}}}
	}
	for i := range sel.NodeSelectorTerms {
		sel.NodeSelectorTerms[i].MatchExpressions = append(sel.NodeSelectorTerms[i].MatchExpressions, req)
	}
	a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution = sel
	return a
}

// selectorKeys are the label keys the source's owner selects on.
func (w *work) selectorKeys(ctx context.Context, src *corev1.Pod) ([]string, error) {
	ref := metav1.GetControllerOf(src)
	if ref == nil || ref.Kind != "ReplicaSet" {
		return nil, nil
	}
	rs := &appsv1.ReplicaSet{}
	if err := w.r.Client.Get(ctx, client.ObjectKey{Namespace: src.Namespace, Name: ref.Name}, rs); err != nil {
		return nil, fmt.Errorf("owner ReplicaSet %s: %w", ref.Name, err)
	}
	var keys []string
	if rs.Spec.Selector != nil {
		for k := range rs.Spec.Selector.MatchLabels {
			keys = append(keys, k)
		}
		for _, e := range rs.Spec.Selector.MatchExpressions {
			keys = append(keys, e.Key)
		}
	}
	return keys, nil
}

// adopt gives the target the source's identity: its labels and owner, so
// the ReplicaSet counts it in place of the source.
func adopt(target *corev1.Pod) error {
	var labels map[string]string
	var owners []metav1.OwnerReference
	if err := json.Unmarshal([]byte(target.Annotations[annotationSourceLabels]), &labels); err != nil {
		return fmt.Errorf("target pod %s: %s: %w", target.Name, annotationSourceLabels, err)
	}
	if err := json.Unmarshal([]byte(target.Annotations[annotationSourceOwners]), &owners); err != nil {
		return fmt.Errorf("target pod %s: %s: %w", target.Name, annotationSourceOwners, err)
	}
	target.Labels = labels
	target.OwnerReferences = owners
	for _, k := range []string{annotationSourceLabels, annotationSourceOwners, v1.AnnotationMigrationName} {
		delete(target.Annotations, k)
	}
	return nil
}

func (w *work) targetPod(ctx context.Context) (*corev1.Pod, error) {
	name := w.m.Status.TargetPod
	if name == "" {
		name = targetName(w.m)
	}
	p := &corev1.Pod{}
	if err := w.r.Client.Get(ctx, client.ObjectKey{Namespace: w.m.Namespace, Name: name}, p); err != nil {
		return nil, err
	}
	return p, nil
}

// containerTrouble names what went wrong with a pod's containers, if
// anything did: a restart, a crash loop, an image that cannot be pulled.
func containerTrouble(p *corev1.Pod) string {
	if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
		return fmt.Sprintf("pod %s is %s", p.Name, p.Status.Phase)
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.RestartCount > 0 {
			return fmt.Sprintf("container %s of %s restarted (%d times)", s.Name, p.Name, s.RestartCount)
		}
		if w := s.State.Waiting; w != nil && w.Reason != "" && w.Reason != "ContainerCreating" && w.Reason != "PodInitializing" {
			return fmt.Sprintf("container %s of %s: %s %s", s.Name, p.Name, w.Reason, w.Message)
		}
	}
	return ""
}

func allRunning(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || len(p.Status.ContainerStatuses) < len(p.Spec.Containers) {
		return false
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.State.Running == nil {
			return false
		}
	}
	return true
}

// unschedulable is the scheduler's reason when it could not place p.
func unschedulable(p *corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return c.Message
		}
	}
	return ""
}
