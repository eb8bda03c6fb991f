package kubelet

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/labels"
)

// SimulateKubeletPartition cuts node's SIMULATED kubelet off from the API
// server, as a network partition between a real kubelet and the control
// plane does: the node stops renewing its Lease and posting its status,
// and stops syncing its pods (it neither writes their status nor
// confirms their deletion, so a pod deleted meanwhile stays Terminating).
// Its pods' processes keep running and its kubelet API keeps answering:
// only the kubelet's way to the API server is cut. The real
// kube-controller-manager then marks the node Ready=Unknown after its
// --node-monitor-grace-period and taints it unreachable, exactly as for a
// real node.
//
// EndKubeletPartition reconnects it.
func (f *Fleet) SimulateKubeletPartition(nodeName string) error {
	n, ok := f.nodes[nodeName]
	if !ok {
		return fmt.Errorf("simulated kubelet: no node %s", nodeName)
	}
	if n.partitioned.Swap(true) {
		return nil
	}
	f.log.Info("SIMULATED partition: the node's kubelet no longer reaches the API server", "node", nodeName)
	return nil
}

// EndKubeletPartition reconnects node's simulated kubelet after
// SimulateKubeletPartition: it renews its Lease and posts Ready at once
// (the node lifecycle controller lifts the unreachable taint), then syncs
// every pod bound to it, catching up with what happened meanwhile (pod
// deletions are completed, statuses written again). Ending a partition
// that is not in place does nothing.
func (f *Fleet) EndKubeletPartition(ctx context.Context, nodeName string) error {
	n, ok := f.nodes[nodeName]
	if !ok {
		return fmt.Errorf("simulated kubelet: no node %s", nodeName)
	}
	if !n.partitioned.Swap(false) {
		return nil
	}
	f.log.Info("SIMULATED partition ended: the node's kubelet reaches the API server again", "node", nodeName)
	if err := n.renewLease(ctx, nil); err != nil {
		return fmt.Errorf("node %s: renewing its lease after the partition: %w", nodeName, err)
	}
	if err := n.refreshStatus(ctx); err != nil {
		return fmt.Errorf("node %s: posting its status after the partition: %w", nodeName, err)
	}
	pods, err := f.pods.List(labels.Everything())
	if err != nil {
		return err
	}
	for _, p := range pods {
		if p.Spec.NodeName == nodeName {
			f.queue.Add(p.Namespace + "/" + p.Name)
		}
	}
	// And the pods it runs that were force-deleted meanwhile: their
	// processes stop now.
	f.mu.Lock()
	for key, pr := range f.running {
		if pr.node == n {
			f.queue.Add(key)
		}
	}
	f.mu.Unlock()
	return nil
}

// partitioned reports whether the kubelet of the pod behind key is cut off
// from the API server (the pod's node when it is known, else the node of
// the pod the fleet runs under that key).
func (f *Fleet) partitioned(nodeName, key string) bool {
	if n := f.nodes[nodeName]; n != nil {
		return n.partitioned.Load()
	}
	f.mu.Lock()
	pr := f.running[key]
	f.mu.Unlock()
	return pr != nil && pr.node.partitioned.Load()
}
