package scheduler

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// Test objects are built from a sane default with functional options.

type nodeOption func(*corev1.Node)

// testNode is a Ready, schedulable, restore-capable linux/amd64 node with
// kernel 6.1, 4 cpu and 8 GiB allocatable, in zone a of region r1.
func testNode(name string, opts ...nodeOption) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			corev1.LabelHostname:       name,
			corev1.LabelArchStable:     "amd64",
			corev1.LabelOSStable:       "linux",
			corev1.LabelTopologyZone:   "r1-a",
			corev1.LabelTopologyRegion: "r1",
			v1.LabelCheckpointRestore:  "true",
			v1.LabelRuntime:            "cri-o",
			v1.LabelRuntimeVersion:     "1.34.0",
			v1.LabelCRIUVersion:        "4.1",
		}},
		Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
			Allocatable: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi"),
				corev1.ResourcePods: resource.MustParse("110"),
			},
			NodeInfo: corev1.NodeSystemInfo{KernelVersion: "6.1.0-18-cloud-amd64"},
		},
	}
	n.Status.Capacity = n.Status.Allocatable.DeepCopy()
	for _, o := range opts {
		o(n)
	}
	return n
}

func withLabel(k, v string) nodeOption { return func(n *corev1.Node) { n.Labels[k] = v } }

func withoutLabel(k string) nodeOption { return func(n *corev1.Node) { delete(n.Labels, k) } }

func withKernel(release string) nodeOption {
	return func(n *corev1.Node) { n.Status.NodeInfo.KernelVersion = release }
}

func withZone(region, zone string) nodeOption {
	return func(n *corev1.Node) {
		n.Labels[corev1.LabelTopologyRegion] = region
		n.Labels[corev1.LabelTopologyZone] = zone
	}
}

func notReady() nodeOption {
	return func(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionFalse }
}

func cordoned() nodeOption { return func(n *corev1.Node) { n.Spec.Unschedulable = true } }

func withTaint(key, value string, effect corev1.TaintEffect) nodeOption {
	return func(n *corev1.Node) {
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: key, Value: value, Effect: effect})
	}
}

func withAllocatable(cpu, mem string) nodeOption {
	return func(n *corev1.Node) {
		n.Status.Allocatable[corev1.ResourceCPU] = resource.MustParse(cpu)
		n.Status.Allocatable[corev1.ResourceMemory] = resource.MustParse(mem)
	}
}

func withImages(names ...string) nodeOption {
	return func(n *corev1.Node) {
		n.Status.Images = append(n.Status.Images, corev1.ContainerImage{Names: names, SizeBytes: 1 << 20})
	}
}

type podOption func(*corev1.Pod)

// testPod is a migratable pod (app + sidecar with the scheduler marker)
// requesting 500m cpu and 1 GiB.
func testPod(name string, opts ...podOption) *corev1.Pod {
	marker := corev1.ResourceList{v1.ResourceCheckpointRestore: resource.MustParse("1")}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name), Annotations: map[string]string{}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "app", Image: "example/consumer:1", Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("1Gi"),
			}}},
			{Name: v1.SidecarContainerName, Image: "ghcr.io/ms2m/ms2m:v0.1.0", Resources: corev1.ResourceRequirements{Requests: marker, Limits: marker}},
		}},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// migratingFrom makes the pod a migration's target leaving node.
func migratingFrom(node string) podOption {
	return func(p *corev1.Pod) { p.Annotations[v1.AnnotationSourceNode] = node }
}

func ofMigration(name string) podOption {
	return func(p *corev1.Pod) { p.Annotations[v1.AnnotationMigrationName] = name }
}

func withBaseImages(list string) podOption {
	return func(p *corev1.Pod) { p.Annotations[v1.AnnotationBaseImages] = list }
}

func withImage(image string) podOption {
	return func(p *corev1.Pod) { p.Spec.Containers[0].Image = image }
}

func boundTo(node string) podOption { return func(p *corev1.Pod) { p.Spec.NodeName = node } }

func withRequests(cpu, mem string) podOption {
	return func(p *corev1.Pod) {
		p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem),
		}
	}
}

func inPhase(phase corev1.PodPhase) podOption { return func(p *corev1.Pod) { p.Status.Phase = phase } }

func tolerating(t corev1.Toleration) podOption {
	return func(p *corev1.Pod) { p.Spec.Tolerations = append(p.Spec.Tolerations, t) }
}

func withClaim(volume, claim string) podOption {
	return func(p *corev1.Pod) {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: volume, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim},
		}})
	}
}

// localVolume is a PersistentVolume reachable only from node, bound to
// claim, and the claim.
func localVolume(name, claim, node string) (*corev1.PersistentVolume, *corev1.PersistentVolumeClaim) {
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{
				Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{node},
			}}}},
		}}},
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: claim, Namespace: "default"},
		Spec:       corev1.PersistentVolumeClaimSpec{VolumeName: name},
	}
	return pv, pvc
}

func migration(name, target string, phase v1.Phase) *v1.StatefulMigration {
	return &v1.StatefulMigration{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Status:     v1.StatefulMigrationStatus{TargetNode: target, Phase: phase},
	}
}

func nodeNames(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}
