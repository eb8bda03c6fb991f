package migratable

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/replay"
)

// Annotations a target pod carries until the handover, so the final
// identity can be applied even after the source is gone (Adopt).
const (
	annotationSourceLabels = "migration.ms2m.io/source-labels"
	annotationSourceOwners = "migration.ms2m.io/source-owners"
)

// TargetName is the name of a ShadowPod migration's target pod.
func TargetName(m *v1.StatefulMigration) string {
	suffix := "-ms2m-" + strings.ToLower(string(m.UID))[:5]
	base := m.Spec.SourcePod
	if len(base)+len(suffix) > 63 {
		base = base[:63-len(suffix)]
	}
	return base + suffix
}

// TargetPodSkeleton is the target pod as it would be scheduled: the
// source's spec pinned to no node, marked with the source node for the
// extender's checks.
func TargetPodSkeleton(m *v1.StatefulMigration, src *corev1.Pod) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: TargetName(m), Namespace: src.Namespace,
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

// BuildTarget is the target pod: the source's spec with the app container
// started from the checkpoint image, the sidecar replaying from the
// checkpoint offsets, pinned to the target node, and, until the handover,
// outside its owner's selector so no ReplicaSet counts or adopts it.
func BuildTarget(m *v1.StatefulMigration, src *corev1.Pod, selectorKeys []string, app string) (*corev1.Pod, error) {
	p := TargetPodSkeleton(m, src)
	for k, v := range src.Labels {
		if !slices.Contains(selectorKeys, k) {
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
// migration's pin) and marked with the migration and the checkpoint image,
// which its finalizer keeps until the pod is gone.
func restoreInto(p *corev1.Pod, m *v1.StatefulMigration, app string) {
	if p.Labels == nil {
		p.Labels = map[string]string{}
	}
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	p.Labels[v1.LabelMigration] = m.Name
	p.Annotations[v1.AnnotationMigrationName] = m.Name
	p.Annotations[v1.AnnotationCheckpointImage] = m.Status.CheckpointImage
	if !slices.Contains(p.Finalizers, v1.FinalizerCheckpointImage) {
		p.Finalizers = append(p.Finalizers, v1.FinalizerCheckpointImage)
	}
	p.Annotations[v1.AnnotationSourceNode] = m.Status.SourceNode
	delete(p.Annotations, v1.AnnotationSidecarMode) // the source's "fenced", or an earlier handover's "live"
	p.Spec.Affinity = pinned(unpinned(p.Spec.Affinity, m.Status.SourceNode), m.Status.TargetNode)
	var tools *corev1.Container
	for i := range p.Spec.Containers {
		if p.Spec.Containers[i].Name == v1.SidecarContainerName {
			tools = &p.Spec.Containers[i]
		}
	}
	for i := range p.Spec.Containers {
		c := &p.Spec.Containers[i]
		switch c.Name {
		case app:
			base := c.Image
			if b, _, _ := strings.Cut(p.Annotations[v1.AnnotationBaseImages], ","); strings.TrimSpace(b) != "" {
				base = strings.TrimSpace(b) // migrated before: c.Image is a checkpoint image
			}
			p.Annotations[v1.AnnotationBaseImages] = base
			if tools != nil {
				withBaseImagePull(p, *tools, base, c.ImagePullPolicy)
			}
			c.Image = m.Status.CheckpointImage
		case v1.SidecarContainerName:
			c.Env = append(withoutEnv(withoutEnv(c.Env, replay.EnvReplayFrom), replay.EnvMode),
				corev1.EnvVar{Name: replay.EnvReplayFrom, Value: ReplayFromEnv(m.Status.CheckpointOffsets)}, ModeEnv())
			c.Env = keepInstanceID(c.Env, m.Spec.SourcePod)
		}
	}
}

// Names of the restored pod's base-image init containers and their volume.
const (
	InitInstallNoop  = "ms2m-install-noop"
	InitPullBase     = "ms2m-pull-base-image"
	volumeBaseImage  = "ms2m-base-image-tools"
	baseImageToolDir = "/ms2m-base-image-tools"
)

// withBaseImagePull gives p two init containers that put the app's base
// image on the node before the app container is restored from the
// checkpoint image: CRI-O looks the base image up in the node's store
// without pulling it, and containerd pulls it without the pod's pull
// secrets. The kubelet pulls an init container's image as any other, with
// the pod's imagePullSecrets and the app's pull policy. The base image
// need not hold a shell: the first init container (the sidecar's image)
// copies its static ms2m-replay into an emptyDir, and the second runs that
// copy, from the base image, with --noop. Both run as non-root with no
// privileges, so they pass the "restricted" Pod Security Standard.
func withBaseImagePull(p *corev1.Pod, tools corev1.Container, base string, policy corev1.PullPolicy) {
	bin := "/ms2m/ms2m-replay"
	if len(tools.Command) > 0 {
		bin = tools.Command[0]
	}
	copied := baseImageToolDir + "/ms2m-replay"
	mount := []corev1.VolumeMount{{Name: volumeBaseImage, MountPath: baseImageToolDir}}
	sc := &corev1.SecurityContext{
		RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To(int64(65532)), RunAsGroup: ptr.To(int64(65532)),
		AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
		Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	res := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
	}
	ours := []corev1.Container{
		{Name: InitInstallNoop, Image: tools.Image, ImagePullPolicy: tools.ImagePullPolicy, Command: []string{bin, "--install-to=" + copied},
			VolumeMounts: mount, SecurityContext: sc, Resources: res},
		{Name: InitPullBase, Image: base, ImagePullPolicy: policy, Command: []string{copied, "--noop"},
			VolumeMounts: mount, SecurityContext: sc, Resources: res},
	}
	p.Spec.InitContainers = append(ours, slices.DeleteFunc(p.Spec.InitContainers, func(c corev1.Container) bool {
		return c.Name == InitInstallNoop || c.Name == InitPullBase
	})...)
	if !slices.ContainsFunc(p.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == volumeBaseImage }) {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: volumeBaseImage,
			VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(resource.MustParse("64Mi"))}}})
	}
}

// RestoreStatefulSetPod turns the pod a StatefulSet creates in place of a
// migration's source (same name) into the restored pod, when m is the
// Sequential migration waiting for it; it reports whether it did. The pod
// mutation webhook calls it (RestoreStatefulSetPodFrom), so the
// StatefulSet's own pod, with its name, ordinal, volumes and owner, is the
// one restored from the checkpoint.
func RestoreStatefulSetPod(p *corev1.Pod, m *v1.StatefulMigration) bool {
	ref := metav1.GetControllerOf(p)
	if ref == nil || ref.Kind != "StatefulSet" || m.Spec.SourcePod != p.Name || m.Namespace != p.Namespace ||
		m.Status.Strategy != v1.StrategySequential || m.Status.Phase != v1.PhaseRestoring ||
		m.Status.CheckpointImage == "" || len(m.Status.FenceOffsets) == 0 || m.DeletionTimestamp != nil {
		return false
	}
	apps := AppContainers(m, p)
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

// Adopt gives a target built by BuildTarget the source's identity: its
// labels and owner, so the ReplicaSet counts it in place of the source. It
// reports false, changing nothing, for a pod that has it already.
func Adopt(target *corev1.Pod) (bool, error) {
	if _, pending := target.Annotations[annotationSourceOwners]; !pending {
		return false, nil
	}
	var labels map[string]string
	var owners []metav1.OwnerReference
	if err := json.Unmarshal([]byte(target.Annotations[annotationSourceLabels]), &labels); err != nil {
		return false, fmt.Errorf("target pod %s: %s: %w", target.Name, annotationSourceLabels, err)
	}
	if err := json.Unmarshal([]byte(target.Annotations[annotationSourceOwners]), &owners); err != nil {
		return false, fmt.Errorf("target pod %s: %s: %w", target.Name, annotationSourceOwners, err)
	}
	target.Labels = labels
	target.OwnerReferences = owners
	for _, k := range []string{annotationSourceLabels, annotationSourceOwners, v1.AnnotationMigrationName} {
		delete(target.Annotations, k)
	}
	return true, nil
}

// AppContainers are the containers a migration checkpoints: the spec's,
// or every container but the replay sidecar.
func AppContainers(m *v1.StatefulMigration, pod *corev1.Pod) []string {
	if len(m.Spec.Containers) > 0 {
		return m.Spec.Containers
	}
	var out []string
	for _, c := range pod.Spec.Containers {
		if c.Name != v1.SidecarContainerName {
			out = append(out, c.Name)
		}
	}
	return out
}

// Sidecar is the pod's replay sidecar container (nil: none).
func Sidecar(p *corev1.Pod) *corev1.Container {
	for i := range p.Spec.Containers {
		if p.Spec.Containers[i].Name == v1.SidecarContainerName {
			return &p.Spec.Containers[i]
		}
	}
	return nil
}

// keepInstanceID makes a restored sidecar the static member its source
// was: the source's group.instance.id as a value, its pod name where the
// source read it from its own name (the webhook's fieldRef), an earlier
// migration's value as it is. A sidecar without one stays a dynamic member.
func keepInstanceID(env []corev1.EnvVar, source string) []corev1.EnvVar {
	for i, e := range env {
		if e.Name == replay.EnvGroupInstanceID && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name" {
			env[i] = corev1.EnvVar{Name: replay.EnvGroupInstanceID, Value: source}
		}
	}
	return env
}

// ModeEnv is the sidecar's MS2M_MODE: the pod's sidecar-mode annotation
// through the downward API, resolved again at every container start.
func ModeEnv() corev1.EnvVar {
	return corev1.EnvVar{Name: replay.EnvMode, ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['" + v1.AnnotationSidecarMode + "']"},
	}}
}

// ReplayFromEnv is the MS2M_REPLAY_FROM value for offsets: {"0":120,...}.
func ReplayFromEnv(offs []v1.PartitionOffset) string {
	m := make(map[string]int64, len(offs))
	for _, o := range offs {
		m[strconv.Itoa(int(o.Partition))] = o.Offset
	}
	b, _ := json.Marshal(m)
	return string(b)
}
