package e2e

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/e2e-framework/pkg/features"
)

// NodesReadyInput configures NodesReadySpec.
type NodesReadyInput struct {
	Cluster *Cluster
	// MinNodes is how many Ready nodes there must be.
	MinNodes int
}

// NodesReadySpec: every node is Ready and schedulable-clean (the node
// lifecycle controller lifted the not-ready taint), heartbeating through
// its Lease.
func NodesReadySpec(in NodesReadyInput) features.Feature {
	return feature("nodes are Ready", "every node Ready, untainted, with a fresh lease", func(ctx context.Context, t *testing.T) {
		c := in.Cluster
		c.Eventually(t, "Ready nodes", func(ctx context.Context) error {
			nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			if len(nodes.Items) < in.MinNodes {
				return fmt.Errorf("%d nodes, want at least %d", len(nodes.Items), in.MinNodes)
			}
			for _, n := range nodes.Items {
				if !nodeReady(&n) {
					return fmt.Errorf("node %s is not Ready", n.Name)
				}
				for _, taint := range n.Spec.Taints {
					if taint.Key == corev1.TaintNodeNotReady || taint.Key == corev1.TaintNodeUnreachable {
						return fmt.Errorf("node %s still has taint %s", n.Name, taint.Key)
					}
				}
				lease, err := c.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, n.Name, metav1.GetOptions{})
				if err != nil {
					return fmt.Errorf("lease of node %s: %w", n.Name, err)
				}
				if lease.Spec.RenewTime == nil || *lease.Spec.HolderIdentity != n.Name {
					return fmt.Errorf("lease of node %s not held by it", n.Name)
				}
			}
			return nil
		})
	})
}
