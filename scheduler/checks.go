package scheduler

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
)

// Reasons a node is refused. They are what a user reads, per node, in the
// pod's FailedScheduling event ("0/3 nodes are available: 3 ms2m
// CheckpointRestoreUnsupported: ..."), so messages do not name the node:
// the scheduler counts identical messages.
const (
	ReasonUnknownNode                  = "UnknownNode"
	ReasonSourceNode                   = "SourceNode"
	ReasonCheckpointRestoreUnsupported = "CheckpointRestoreUnsupported"
	ReasonPlatformMismatch             = "PlatformMismatch"
	ReasonRuntimeMismatch              = "RuntimeMismatch"
	ReasonKernelTooOld                 = "KernelTooOld"
	ReasonVolumeNodeAffinity           = "VolumeNodeAffinity"
	ReasonNodeNotReady                 = "NodeNotReady"
	ReasonNodeUnschedulable            = "NodeUnschedulable"
	ReasonUntoleratedTaint             = "UntoleratedTaint"
)

// CheckFunc decides one thing about placing the pod on the node: failed
// says the node is refused, reason (a constant above) and message say why.
type CheckFunc func(p *PodInfo, n *NodeInfo) (reason, message string, failed bool)

// Check is a named CheckFunc. Unresolvable says that a node it refuses
// cannot fit however many pods the scheduler preempts there: the extender
// then reports the node in FailedAndUnresolvableNodes, so the scheduler
// does not evict pods for nothing.
type Check struct {
	Name         string
	Unresolvable bool
	Func         CheckFunc
}

// Chain runs checks in order and stops at the first that refuses the node.
type Chain []Check

// Verdict is a chain's decision for one node.
type Verdict struct {
	Check        string
	Reason       string
	Message      string
	Unresolvable bool
}

// String is the text the scheduler shows for a refused node.
func (v Verdict) String() string { return "ms2m " + v.Reason + ": " + v.Message }

// Evaluate returns the first refusal, or ok.
func (c Chain) Evaluate(p *PodInfo, n *NodeInfo) (v Verdict, ok bool) {
	for i := range c {
		if reason, msg, failed := c[i].Func(p, n); failed {
			return Verdict{Check: c[i].Name, Reason: reason, Message: msg, Unresolvable: c[i].Unresolvable}, false
		}
	}
	return Verdict{}, true
}

// DefaultChecks is the extender's filter. Unresolvable checks come first, so
// a node that fails several is reported as unresolvable.
//
// The Ready, cordon and taint checks repeat what the scheduler's own
// plugins decide before it calls the extender; they matter for the
// controller's automatic target choice, which runs the same chain without
// the scheduler. They are resolvable: the node recovers, is uncordoned or
// untainted, and no preemption is tried because the scheduler's plugins
// refuse the node in their own dry run.
func DefaultChecks() Chain {
	return Chain{
		{Name: "source-node", Unresolvable: true, Func: checkNotSource},
		{Name: "checkpoint-restore", Unresolvable: true, Func: checkCanRestore},
		{Name: "platform", Unresolvable: true, Func: checkPlatform},
		{Name: "runtime", Unresolvable: true, Func: checkRuntime},
		{Name: "kernel", Unresolvable: true, Func: checkKernel},
		{Name: "volume-topology", Unresolvable: true, Func: checkVolumeTopology},
		{Name: "ready", Func: checkReady},
		{Name: "schedulable", Func: checkSchedulable},
		{Name: "taints", Func: checkTaints},
	}
}

func checkNotSource(p *PodInfo, n *NodeInfo) (string, string, bool) {
	if p.SourceNode != "" && n.Name == p.SourceNode {
		return ReasonSourceNode, "the pod is migrating away from this node", true
	}
	return "", "", false
}

func checkCanRestore(_ *PodInfo, n *NodeInfo) (string, string, bool) {
	if n.RestoreProblem == "" {
		return "", "", false
	}
	if n.restoreMessage == "" { // a NodeInfo not made by NewNodeInfo
		return ReasonCheckpointRestoreUnsupported, "node cannot restore checkpoints: " + n.RestoreProblem, true
	}
	return ReasonCheckpointRestoreUnsupported, n.restoreMessage, true
}

// checkPlatform: a checkpoint holds machine code and memory of one
// architecture and operating system; it restores only on the same.
func checkPlatform(p *PodInfo, n *NodeInfo) (string, string, bool) {
	if p.Source == nil {
		return "", "", false
	}
	s := p.Source
	if (s.Arch != "" && n.Arch != s.Arch) || (s.OS != "" && n.OS != s.OS) {
		return ReasonPlatformMismatch, fmt.Sprintf("node is %s/%s, the checkpoint was taken on %s/%s",
			orUnknown(n.OS), orUnknown(n.Arch), orUnknown(s.OS), orUnknown(s.Arch)), true
	}
	return "", "", false
}

// checkRuntime: a checkpoint restores only in the container runtime that
// wrote it. CRI-O and containerd write different archives (CRI-O's
// spec.dump carries io.kubernetes.cri-o.* annotations and no status.dump;
// containerd's carries io.kubernetes.cri.* and needs status.dump), and each
// refuses the other's. The agent labels the runtime (ms2m.io/runtime);
// without the source's label nothing is compared.
func checkRuntime(p *PodInfo, n *NodeInfo) (string, string, bool) {
	if p.Source == nil || p.Source.Runtime == "" || n.Runtime == p.Source.Runtime {
		return "", "", false
	}
	return ReasonRuntimeMismatch, fmt.Sprintf("node runs %s, the checkpoint was taken by %s (a checkpoint restores only in the runtime that wrote it)",
		orUnknown(n.Runtime), p.Source.Runtime), true
}

// checkKernel: CRIU restores a process into the kernel it finds. A kernel
// older (by major.minor) than the source's may lack what the process
// used there (syscalls, namespaces, rseq, mount and socket options), so it
// is refused; an equal or newer one is accepted, as kernels keep their
// user-space interface. Patch levels and distribution suffixes are
// ignored. When the source's kernel is known but the node's is not, the
// node is refused: nothing says it is safe.
func checkKernel(p *PodInfo, n *NodeInfo) (string, string, bool) {
	if p.Source == nil || !p.Source.Kernel.ok {
		return "", "", false
	}
	if !n.Kernel.ok || n.Kernel.olderThan(p.Source.Kernel) {
		return ReasonKernelTooOld, fmt.Sprintf("kernel %s is older than the source node's %s (CRIU restores only on the same or a newer kernel)",
			n.Kernel, p.Source.Kernel), true
	}
	return "", "", false
}

func checkVolumeTopology(p *PodInfo, n *NodeInfo) (string, string, bool) {
	for _, v := range p.volumes {
		if !v.selector.Match(n.Node) {
			return ReasonVolumeNodeAffinity, fmt.Sprintf("persistent volume %s is not reachable from this node (its node affinity)", v.volume), true
		}
	}
	return "", "", false
}

func checkReady(_ *PodInfo, n *NodeInfo) (string, string, bool) {
	if !n.Ready {
		return ReasonNodeNotReady, "node is not Ready", true
	}
	return "", "", false
}

func checkSchedulable(_ *PodInfo, n *NodeInfo) (string, string, bool) {
	if n.Unschedulable {
		return ReasonNodeUnschedulable, "node is cordoned (spec.unschedulable)", true
	}
	return "", "", false
}

func checkTaints(p *PodInfo, n *NodeInfo) (string, string, bool) {
	if !n.hardTaints {
		return "", "", false
	}
	for i := range n.Node.Spec.Taints {
		t := &n.Node.Spec.Taints[i]
		if t.Effect != corev1.TaintEffectNoSchedule && t.Effect != corev1.TaintEffectNoExecute {
			continue
		}
		if !tolerates(p.Pod.Spec.Tolerations, t) {
			return ReasonUntoleratedTaint, fmt.Sprintf("node has taint %s that the pod does not tolerate", t.ToString()), true
		}
	}
	return "", "", false
}

func tolerates(tolerations []corev1.Toleration, t *corev1.Taint) bool {
	for i := range tolerations {
		if tolerations[i].ToleratesTaint(klog.Background(), t, true) {
			return true
		}
	}
	return false
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
