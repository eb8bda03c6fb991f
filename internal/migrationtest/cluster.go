package migrationtest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/replay"
)

// FakeArchive and FakeImage are what the FAKE agent reports.
const (
	FakeArchive = "/var/lib/kubelet/checkpoints/fake.tar"
	FakeImage   = "registry.invalid/checkpoints/fake@sha256:0000000000000000000000000000000000000000000000000000000000000000"
)

// AgentReport is the FAKE node agent's next report on m, if it has one:
// in Checkpointing it pauses the source's (FAKE) sidecar, "checkpoints"
// and resumes it (unless the strategy stops the source there), and
// reports the archive with O as the pause answered it; once the migration
// is Transferring, a pushed image. It returns the annotation key and value
// to write ("" when it has nothing to say).
func AgentReport(ctx context.Context, m *v1.StatefulMigration, s Pauser) (string, string) {
	var key string
	var res v1.AgentResult
	switch {
	case m.Status.Phase == v1.PhaseCheckpointing && m.Annotations[v1.AnnotationAgentCheckpoint] == "":
		key, res = v1.AnnotationAgentCheckpoint, v1.AgentResult{Node: m.Status.SourceNode, Archive: FakeArchive}
		paused, err := s.Pause(ctx, replay.Endpoint{})
		if err != nil {
			res = v1.AgentResult{Node: m.Status.SourceNode, Error: "pausing the source's sidecar: " + err.Error()}
			break
		}
		res.Offsets, res.Assigned = paused.Checkpoint, paused.Assigned
		if m.Status.Strategy.StopsForCheckpoint() {
			// Left paused, for the controller to fence.
			if paused.PausedAt != nil {
				from := metav1.NewMicroTime(*paused.PausedAt)
				res.PausedAt = &from
			}
			break
		}
		resumed, err := s.Resume(ctx, replay.Endpoint{})
		if err != nil {
			res = v1.AgentResult{Node: m.Status.SourceNode, Error: "resuming the source's sidecar: " + err.Error()}
			break
		}
		if resumed.PausedAt != nil && resumed.ResumedAt != nil {
			from, to := metav1.NewMicroTime(*resumed.PausedAt), metav1.NewMicroTime(*resumed.ResumedAt)
			res.PausedAt, res.ResumedAt = &from, &to
		}
	case m.Status.Phase == v1.PhaseTransferring && m.Annotations[v1.AnnotationAgentImage] == "":
		key, res = v1.AnnotationAgentImage, v1.AgentResult{Node: m.Status.SourceNode, SizeBytes: 1 << 20, Image: FakeImage}
	default:
		return "", ""
	}
	b, _ := json.Marshal(res)
	return key, string(b)
}

// Pauser is what the FAKE agent calls of the sidecars (Sidecars, or a
// benchmark's wrapper of them).
type Pauser interface {
	Pause(context.Context, replay.Endpoint) (replay.Position, error)
	Resume(context.Context, replay.Endpoint) (replay.Position, error)
}

// Annotate patches one annotation onto m, as the agent reports.
func Annotate(ctx context.Context, c client.Client, m *v1.StatefulMigration, key, value string) error {
	patch := client.MergeFrom(m.DeepCopy())
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	m.Annotations[key] = value
	return c.Patch(ctx, m, patch)
}

// PinnedNode is the node a pod's required node affinity pins it to.
func PinnedNode(p *corev1.Pod) string {
	a := p.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return ""
	}
	for _, t := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, e := range t.MatchExpressions {
			if e.Key == corev1.LabelHostname && e.Operator == corev1.NodeSelectorOpIn && len(e.Values) == 1 {
				return e.Values[0]
			}
		}
	}
	return ""
}

// Bind binds p to node through the binding subresource, as the scheduler
// does.
func Bind(ctx context.Context, c client.Client, p *corev1.Pod, node string) error {
	b := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace},
		Target: corev1.ObjectReference{Kind: "Node", Name: node}}
	return c.SubResource("binding").Create(ctx, p, b)
}

var podIPs struct {
	sync.Mutex
	next int
}

// Running sets p's status as a kubelet would once its containers run.
func Running(p *corev1.Pod) {
	podIPs.Lock()
	podIPs.next++
	n := podIPs.next
	podIPs.Unlock()
	now := metav1.Now()
	p.Status.Phase = corev1.PodRunning
	p.Status.PodIP = fmt.Sprintf("10.%d.%d.%d", n>>16&0xff, n>>8&0xff, n&0xff)
	p.Status.PodIPs = []corev1.PodIP{{IP: p.Status.PodIP}}
	p.Status.StartTime = &now
	p.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
	}
	p.Status.ContainerStatuses = nil
	for _, c := range p.Spec.Containers {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, Ready: true, Started: ptr.To(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
}

// ReportRunning writes Running's status for p, retrying while another
// writer's update conflicts.
func ReportRunning(ctx context.Context, c client.Client, p *corev1.Pod) error {
	for range 100 {
		Running(p)
		err := c.Status().Update(ctx, p)
		if !apierrors.IsConflict(err) {
			return err
		}
		if err := c.Get(ctx, client.ObjectKeyFromObject(p), p); err != nil {
			return err
		}
		if p.Status.Phase == corev1.PodRunning {
			return nil
		}
	}
	return fmt.Errorf("pod %s: status update kept conflicting", p.Name)
}

// SourcePod is a migratable bare pod on node, as the webhook would have
// prepared it, bound to brokers (a group named after the pod).
func SourcePod(namespace, name, node, brokers string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{"app": name}, Annotations: map[string]string{
			v1.AnnotationMigratable: "true", v1.AnnotationKafkaBrokers: brokers, v1.AnnotationKafkaTopic: "orders",
			v1.AnnotationKafkaGroup: name, v1.AnnotationAppPort: "8080", v1.AnnotationCheckpointRestore: "enabled",
		}},
		Spec: corev1.PodSpec{
			NodeName: node,
			Containers: []corev1.Container{
				{Name: "app", Image: "ghcr.io/ms2m/ms2m:v0.1.0", Command: []string{"/ms2m/example-consumer"}},
				{Name: v1.SidecarContainerName, Image: "ghcr.io/ms2m/ms2m:v0.1.0", Command: []string{"/ms2m/ms2m-replay"}},
			},
		},
	}
}

// Node is a Ready, untainted node whose (absent) agent has labelled it
// restore-capable.
func Node(name string) *corev1.Node {
	capacity := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("32Gi"), corev1.ResourcePods: resource.MustParse("1000")}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			corev1.LabelHostname: name, corev1.LabelOSStable: "linux", corev1.LabelArchStable: "amd64",
			v1.LabelCheckpointRestore: "true", v1.LabelRuntime: "fake", v1.LabelRuntimeVersion: "1.0", v1.LabelCRIUVersion: "4.0",
		}},
		Status: corev1.NodeStatus{
			Capacity: capacity, Allocatable: capacity,
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
			NodeInfo:   corev1.NodeSystemInfo{KernelVersion: "6.1.0", OperatingSystem: "linux", Architecture: "amd64"},
		},
	}
}

// CreateNode creates Node(name) with its status, and without the
// not-ready taint the API server puts on a new node (no node lifecycle
// controller runs to remove it).
func CreateNode(ctx context.Context, c client.Client, name string) (*corev1.Node, error) {
	n := Node(name)
	status := n.Status
	if err := c.Create(ctx, n); err != nil {
		return nil, err
	}
	n.Status = status
	if err := c.Status().Update(ctx, n); err != nil {
		return nil, err
	}
	n.Spec.Taints = nil
	return n, c.Update(ctx, n)
}
