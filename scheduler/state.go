package scheduler

import (
	"strconv"
	"strings"
	"unique"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// State is what the checks and the scoring read besides the pod and the
// candidate nodes. *Cache implements it from the manager's informers; tests
// build a Cache from objects directly (NewCacheFrom).
type State interface {
	// Node returns a node with its current load; ok is false when the node
	// is unknown.
	Node(name string) (n NodeState, ok bool)
	// LookupNodes appends to dst[:0] one NodeState per name, in order, with
	// a nil NodeInfo for a name it does not know. With nodeCacheCapable the
	// scheduler sends only node names, so this is where a request's nodes
	// come from: all of them in one call, one pass under one lock, into a
	// slice the caller reuses.
	LookupNodes(dst []NodeState, names []string) []NodeState
	// MigrationTarget is status.targetNode of the StatefulMigration key
	// while it is in flight (not Completed or Failed), else "".
	MigrationTarget(key types.NamespacedName) string
	// NodesWithImage is the set of known nodes that hold image (a
	// normalised name) in status.images.
	NodesWithImage(image string) NodeSet
	// Claim and Volume return a PersistentVolumeClaim and a
	// PersistentVolume, nil when unknown.
	Claim(namespace, name string) *corev1.PersistentVolumeClaim
	Volume(name string) *corev1.PersistentVolume
}

// NodeState is a node with its load.
type NodeState struct {
	*NodeInfo
	// Requested sums the cpu and memory requests of the pods bound to the
	// node that have not terminated.
	Requested Resources
	// Inbound counts the StatefulMigrations in flight toward the node.
	Inbound int
}

// NodeSet is a set of cached nodes, by slot.
type NodeSet struct{ bits []uint64 }

// Has reports whether the set holds n; false for nodes not from a Cache.
func (s NodeSet) Has(n *NodeInfo) bool {
	i := n.slot
	return i >= 0 && int(i/64) < len(s.bits) && s.bits[i/64]&(1<<(uint(i)%64)) != 0
}

// Resources are cpu (millicores) and memory (bytes).
type Resources struct {
	MilliCPU int64
	Memory   int64
}

func (r Resources) add(o Resources) Resources {
	return Resources{MilliCPU: r.MilliCPU + o.MilliCPU, Memory: r.Memory + o.Memory}
}

// kernelVersion is major.minor of a Linux kernel release; ok is false when
// the release could not be read.
type kernelVersion struct {
	major, minor int32
	ok           bool
}

func (k kernelVersion) String() string {
	if !k.ok {
		return "unknown"
	}
	return strconv.Itoa(int(k.major)) + "." + strconv.Itoa(int(k.minor))
}

func (k kernelVersion) olderThan(o kernelVersion) bool {
	return k.major < o.major || (k.major == o.major && k.minor < o.minor)
}

// parseKernel reads major.minor from a kernel release such as
// "6.1.0-18-cloud-amd64" or "5.15.0-1049-gke".
func parseKernel(release string) kernelVersion {
	major, rest, ok := leadingInt(release)
	if !ok || !strings.HasPrefix(rest, ".") {
		return kernelVersion{}
	}
	minor, _, ok := leadingInt(rest[1:])
	if !ok {
		return kernelVersion{}
	}
	return kernelVersion{major: int32(major), minor: int32(minor), ok: true}
}

func leadingInt(s string) (int, string, bool) {
	i := 0
	for i < len(s) && i < 6 && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, s, false
	}
	n, err := strconv.Atoi(s[:i])
	return n, s[i:], err == nil
}

// NodeInfo is a node with what the checks and the scoring derive from it,
// computed once per node update rather than once per request.
//
// The fields a request reads come first, together: a request over 5,000
// nodes reads them from 5,000 NodeInfos, and few cache lines per node
// matter more than the order a reader would expect.
type NodeInfo struct {
	// Name, Unschedulable and the other facts repeat the Node's, so the
	// checks do not chase the Node pointer for each of thousands of nodes.
	Name string
	// slot is the node's index in its Cache's NodeSets, -1 for nodes not
	// from a Cache (their images are scanned instead).
	slot          int32
	Unschedulable bool
	// Ready is the node's Ready condition.
	Ready bool
	// hardTaints: the node has NoSchedule or NoExecute taints.
	hardTaints bool
	// RestoreProblem says why the node cannot restore a checkpoint; empty
	// when it can.
	RestoreProblem string
	// Arch, OS, Zone and Region are interned (unique.Make): nodes share a
	// few values, and comparing two copies of an interned string compares
	// pointers without reading the bytes, which for thousands of nodes
	// would each be a separate allocation to load.
	Arch, OS     string
	Runtime      string // the ms2m.io/runtime label: cri-o, containerd
	Kernel       kernelVersion
	Zone, Region string
	Allocatable  Resources

	Node *corev1.Node
	// restoreMessage is the checkpoint-restore check's message, built here
	// once rather than for each refused node of each request, and interned
	// like Arch.
	restoreMessage string
	// images are the normalised names of the images on the node, when
	// indexed.
	images []string
}

// NewNodeInfo derives a NodeInfo. indexImages builds the image set, worth it
// for nodes kept in a cache, not for nodes seen in one request.
func NewNodeInfo(node *corev1.Node, indexImages bool) *NodeInfo {
	l := node.Labels
	n := &NodeInfo{
		Node:           node,
		Name:           node.Name,
		Unschedulable:  node.Spec.Unschedulable,
		slot:           -1,
		RestoreProblem: restoreProblem(l),
		Arch:           intern(l[corev1.LabelArchStable]),
		OS:             intern(l[corev1.LabelOSStable]),
		Runtime:        intern(l[v1.LabelRuntime]),
		Zone:           intern(l[corev1.LabelTopologyZone]),
		Region:         intern(l[corev1.LabelTopologyRegion]),
		Kernel:         parseKernel(node.Status.NodeInfo.KernelVersion),
		Allocatable: Resources{
			MilliCPU: node.Status.Allocatable.Cpu().MilliValue(),
			Memory:   node.Status.Allocatable.Memory().Value(),
		},
	}
	if n.RestoreProblem != "" {
		n.restoreMessage = intern("node cannot restore checkpoints: " + n.RestoreProblem)
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			n.Ready = c.Status == corev1.ConditionTrue
		}
	}
	for _, t := range node.Spec.Taints {
		if t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute {
			n.hardTaints = true
		}
	}
	if indexImages {
		seen := make(map[string]struct{}, 2*len(node.Status.Images))
		for _, img := range node.Status.Images {
			for _, name := range img.Names {
				norm := normalizeImage(name)
				if _, dup := seen[norm]; !dup {
					seen[norm] = struct{}{}
					n.images = append(n.images, norm)
				}
			}
		}
	}
	return n
}

// intern returns the canonical copy of s (see NodeInfo.Arch).
func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}

// hasImageScan looks for image in the node's status.images.
func (n *NodeInfo) hasImageScan(image string) bool {
	for _, img := range n.Node.Status.Images {
		for _, name := range img.Names {
			if normalizeImage(name) == image {
				return true
			}
		}
	}
	return false
}

// restoreProblem checks the labels the ms2m agent sets on a node after
// probing its runtime and CRIU.
func restoreProblem(labels map[string]string) string {
	switch v, ok := labels[v1.LabelCheckpointRestore]; {
	case !ok:
		return "label " + v1.LabelCheckpointRestore + " is missing (the ms2m agent sets it where the runtime can restore checkpoints)"
	case v != "true":
		return "label " + v1.LabelCheckpointRestore + " is not \"true\" (the runtime cannot restore checkpoints)"
	}
	for _, l := range []string{v1.LabelRuntime, v1.LabelRuntimeVersion, v1.LabelCRIUVersion} {
		if labels[l] == "" {
			return "label " + l + " is missing (the ms2m agent has not probed this node)"
		}
	}
	return ""
}

// normalizeImage makes "nginx" and "docker.io/library/nginx:latest" equal,
// as the kubelet reports fully qualified names.
func normalizeImage(ref string) string {
	name := ref
	slash := strings.IndexByte(name, '/')
	if slash < 0 {
		name = "docker.io/library/" + name
	} else if host := name[:slash]; !strings.ContainsAny(host, ".:") && host != "localhost" {
		name = "docker.io/" + name
	}
	if !strings.Contains(name, "@") && !strings.Contains(name[strings.LastIndexByte(name, '/')+1:], ":") {
		name += ":latest"
	}
	return name
}

// PodInfo is the pod being placed with what the checks and the scoring need
// from it, computed once per request.
type PodInfo struct {
	Pod *corev1.Pod
	// SourceNode is the node a migration's target pod leaves (annotation
	// migration.ms2m.io/source-node); empty for other pods.
	SourceNode string
	// Source is SourceNode as the State knows it; nil when there is no
	// source or it is unknown (a deleted node), which skips the comparisons.
	Source *NodeInfo
	// Migration is the StatefulMigration that created the pod, if any, and
	// ownTarget where it is heading: that migration does not count
	// against its own target.
	Migration types.NamespacedName
	ownTarget string
	Requests  Resources
	// Images are the pod's container images (for a target pod, the
	// checkpoint images) and its base images, normalised.
	Images    []string
	imageSets []NodeSet
	volumes   []volumeConstraint
}

type volumeConstraint struct {
	volume   string
	selector *nodeaffinity.NodeSelector
}

// NewPodInfo reads the pod's migration annotations, requests, images and the
// node affinity of the persistent volumes its claims are bound to.
func NewPodInfo(pod *corev1.Pod, st State) *PodInfo {
	p := &PodInfo{Pod: pod, SourceNode: pod.Annotations[v1.AnnotationSourceNode]}
	if p.SourceNode != "" {
		if src, ok := st.Node(p.SourceNode); ok {
			p.Source = src.NodeInfo
		}
	}
	if name := pod.Annotations[v1.AnnotationMigrationName]; name != "" {
		p.Migration = types.NamespacedName{Namespace: pod.Namespace, Name: name}
		p.ownTarget = st.MigrationTarget(p.Migration)
	}
	p.Requests = podRequests(pod)
	seen := map[string]bool{}
	addImage := func(ref string) {
		ref = strings.TrimSpace(ref)
		if ref == "" {
			return
		}
		if n := normalizeImage(ref); !seen[n] {
			seen[n] = true
			p.Images = append(p.Images, n)
		}
	}
	for _, c := range pod.Spec.Containers {
		if c.Name != v1.SidecarContainerName {
			addImage(c.Image)
		}
	}
	for _, ref := range strings.Split(pod.Annotations[v1.AnnotationBaseImages], ",") {
		addImage(ref)
	}
	for _, img := range p.Images {
		p.imageSets = append(p.imageSets, st.NodesWithImage(img))
	}
	p.volumes = volumeConstraints(pod, st)
	return p
}

func volumeConstraints(pod *corev1.Pod, st State) []volumeConstraint {
	var out []volumeConstraint
	for _, vol := range pod.Spec.Volumes {
		var claim string
		switch {
		case vol.PersistentVolumeClaim != nil:
			claim = vol.PersistentVolumeClaim.ClaimName
		case vol.Ephemeral != nil:
			claim = pod.Name + "-" + vol.Name
		default:
			continue
		}
		// Unbound claims and unknown objects are the scheduler's own
		// VolumeBinding plugin's business; only a bound volume pins nodes.
		pvc := st.Claim(pod.Namespace, claim)
		if pvc == nil || pvc.Spec.VolumeName == "" {
			continue
		}
		pv := st.Volume(pvc.Spec.VolumeName)
		if pv == nil || pv.Spec.NodeAffinity == nil || pv.Spec.NodeAffinity.Required == nil {
			continue
		}
		sel, err := nodeaffinity.NewNodeSelector(pv.Spec.NodeAffinity.Required)
		if err != nil {
			// The API server validates node affinity; a selector it let
			// through but we cannot parse is no reason to refuse nodes.
			continue
		}
		out = append(out, volumeConstraint{volume: pv.Name, selector: sel})
	}
	return out
}
