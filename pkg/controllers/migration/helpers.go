package migration

import (
	"context"
	"fmt"
	"maps"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migratable"
	"github.com/ms2m/ms2m/pkg/replay"
)

// Helpers the phases share: the migration's pods, its binding, the agent's
// reports, the sidecars' addresses.

// annotationDeletionCost makes a ReplicaSet that briefly owns both the
// source and the target remove the source.
const annotationDeletionCost = "controller.kubernetes.io/pod-deletion-cost"

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

// sourcePod is the pod named by spec.sourcePod (read once a reconcile).
func (w *work) sourcePod(ctx context.Context) (*corev1.Pod, error) {
	if w.source != nil {
		return w.source, nil
	}
	p := &corev1.Pod{}
	if err := w.r.Client.Get(ctx, client.ObjectKey{Namespace: w.m.Namespace, Name: w.m.Spec.SourcePod}, p); err != nil {
		return nil, err
	}
	w.source = p
	return p, nil
}

// sourceStill is the source pod; a source that disappeared (when: during
// what) fails the migration, returned as the outcome with a nil pod.
func (w *work) sourceStill(ctx context.Context, when string) (*corev1.Pod, outcome, error) {
	src, err := w.sourcePod(ctx)
	if apierrors.IsNotFound(err) {
		o, _ := fail(v1.ReasonSourcePodNotFound, "source pod %s disappeared %s", w.m.Spec.SourcePod, when)
		return nil, o, nil
	}
	if err != nil {
		return nil, outcome{}, err
	}
	return src, outcome{}, nil
}

// fence stops the source's live processing and records where: the fence
// offsets F. Idempotent: the sidecar answers a repeat with the same F. It
// reports false, with the phase's outcome, when the sidecar did not fence.
func (w *work) fence(ctx context.Context, src *corev1.Pod) (outcome, bool, error) {
	// Recorded first: a sidecar that restarts once fenced must come back
	// fenced, not rejoin the group next to the target.
	if err := w.r.setSidecarMode(ctx, src, v1.SidecarModeFenced); err != nil {
		return outcome{}, false, err
	}
	called := w.r.Clock.Now()
	pos, err := w.r.Sidecars.Fence(ctx, w.sidecarAddr(src))
	w.fenceAnswered = w.r.Clock.Now()
	w.fenceCall = w.fenceAnswered.Sub(called)
	if err != nil {
		o, err := sidecarFailed(ctx, err, v1.ReasonHandoverFailed, "fencing the source")
		return o, false, err
	}
	topic, err := w.topic(ctx)
	if err != nil {
		return outcome{}, false, err
	}
	// F is the group's committed offsets, which the sidecar checked against
	// what the app acknowledged: Next names only the partitions it delivered
	// from since it last started.
	// F bounds the replay from O: the partitions of O (a restarted fenced
	// source no longer knows its assignment and answers them all).
	fence := pos.Fence
	if o := fromOffsets(w.m.Status.CheckpointOffsets); len(o) > 0 {
		fence = only(fence, slices.Collect(maps.Keys(o)))
	}
	w.m.Status.FenceOffsets = toOffsets(topic, fence)
	if pos.FencedAt != nil {
		t := metav1.NewMicroTime(*pos.FencedAt)
		w.m.Status.FenceTime = &t
	}
	return outcome{}, true, nil
}

// only is offs restricted to partitions.
func only(offs map[int]int64, partitions []int) map[int]int64 {
	out := make(map[int]int64, len(partitions))
	for _, p := range partitions {
		if o, ok := offs[p]; ok {
			out[p] = o
		}
	}
	return out
}

// setSidecarMode records on p where its sidecar must stand after a
// restart (v1.AnnotationSidecarMode); "" removes the record.
func (r *Reconciler) setSidecarMode(ctx context.Context, p *corev1.Pod, mode string) error {
	if p.Annotations[v1.AnnotationSidecarMode] == mode {
		return nil
	}
	before := p.DeepCopy()
	if mode == "" {
		delete(p.Annotations, v1.AnnotationSidecarMode)
	} else {
		metav1.SetMetaDataAnnotation(&p.ObjectMeta, v1.AnnotationSidecarMode, mode)
	}
	if err := r.Client.Patch(ctx, p, client.MergeFrom(before)); err != nil {
		return fmt.Errorf("recording sidecar mode %q on pod %s: %w", mode, p.Name, err)
	}
	return nil
}

// targetPod is the pod the migration restores into.
func (w *work) targetPod(ctx context.Context) (*corev1.Pod, error) {
	name := w.m.Status.TargetPod
	if name == "" {
		name = migratable.TargetName(w.m)
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

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// sidecarAddr is the control endpoint of a pod's replay sidecar.
func (w *work) sidecarAddr(pod *corev1.Pod) replay.Endpoint {
	return replay.EndpointOf(pod.Status.PodIP, w.r.Opts.SidecarControlPort, pod.Namespace, string(pod.UID))
}

// topic is the topic the migration's offsets are of: the spec's, else
// the one recorded with the checkpoint offsets, else the source pod's
// annotation.
func (w *work) topic(ctx context.Context) (string, error) {
	if q := w.m.Spec.MessageQueueConfig; q != nil && q.Topic != "" {
		return q.Topic, nil
	}
	if offs := w.m.Status.CheckpointOffsets; len(offs) > 0 && offs[0].Topic != "" {
		return offs[0].Topic, nil
	}
	src, err := w.sourcePod(ctx)
	if err != nil {
		return "", err
	}
	return src.Annotations[v1.AnnotationKafkaTopic], nil
}
