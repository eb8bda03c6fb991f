package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/ms2m/ms2m/internal/example/deploy"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// TargetNodeNotReadySpec: the target node's kubelet is cut off from the
// API server while the target replays (the handover is held by a
// PodDisruptionBudget, so it lands in Replaying every time, before the
// fence). The real kube-controller-manager marks the node Ready=Unknown
// after its grace period; the migration fails with TargetNodeNotReady
// naming the node and rolls back without waiting for the target pod,
// whose deletion no kubelet confirms; the source, never fenced, serves on
// its node, and nothing is lost or processed twice live. Then the node
// heartbeats again and the target pod goes. Sandbox only: it partitions
// a simulated kubelet.
func TargetNodeNotReadySpec(in SpecInput) features.Feature {
	return feature("target node NotReady during replay", "fails naming the node, rolls back, source serves, zero loss", func(ctx context.Context, t *testing.T) {
		in.Cluster.sandboxOnly(t, "partitions a simulated node's kubelet")
		s := in.open(t, "nodedown")
		c, ns, e := s.Cluster, s.NS, s.Example
		m, d := s.migrationHeldByBudget(ctx, "nodedown", in.Load.Count/4)
		src, node := d.Pod, m.Status.TargetNode
		target, err := c.Client.CoreV1().Pods(ns).Get(ctx, m.Status.TargetPod, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if onNode(ctx, t, c, ns, "batch.kubernetes.io/job-name="+e.Name+"-producer", node) {
			// Its Job could not see it complete from a partitioned node.
			t.Logf("the producer runs on %s too: letting it finish first", node)
			if err := deploy.WaitProducer(ctx, c.Client, ns, e); err != nil {
				t.Fatal(err)
			}
		}

		if err := c.Sandbox.SimulateNodePartition(node); err != nil {
			t.Fatal(err)
		}
		cut := time.Now()
		t.Cleanup(func() { endPartition(t, c, node) })
		t.Logf("%s's kubelet cut off from the API server while %s replays", node, target.Name)
		c.Eventually(t, node+" NotReady", func(ctx context.Context) error {
			n, err := c.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if nodeReady(n) {
				return fmt.Errorf("node %s still Ready", node)
			}
			return nil
		})
		t.Logf("%s NotReady %s after the partition", node, time.Since(cut).Round(time.Second))

		s.rolledBack(m, v1.ReasonTargetNodeNotReady, "target node "+node+" is not Ready")
		t.Logf("failed %s after the partition", time.Since(cut).Round(time.Second))

		cur, err := c.Client.CoreV1().Pods(ns).Get(ctx, src.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if cur.UID != src.UID || !IsReady(cur) || cur.Spec.NodeName != src.Spec.NodeName || cur.DeletionTimestamp != nil {
			t.Fatalf("source %s: node %s (was %s), phase %s, ready %v, deleting %v", cur.Name, cur.Spec.NodeName, src.Spec.NodeName,
				cur.Status.Phase, IsReady(cur), cur.DeletionTimestamp != nil)
		}
		// The rollback did not wait for it: its deletion is pending
		// until a kubelet confirms it.
		if p, err := c.Client.CoreV1().Pods(ns).Get(ctx, target.Name, metav1.GetOptions{}); err == nil && p.DeletionTimestamp == nil {
			t.Fatalf("target %s not being deleted", target.Name)
		} else if err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		s.sourceServedOn(ctx, src)

		endPartition(t, c, node)
		waitPodGone(t, c, ns, target.Name, "the target removed once its kubelet is back")
	})
}

// onNode reports whether a pod matching selector in ns runs on node.
func onNode(ctx context.Context, t *testing.T, c *Cluster, ns, selector, node string) bool {
	t.Helper()
	pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName == node {
			return true
		}
	}
	return false
}

// endPartition reconnects node's kubelet and waits until the node is Ready
// and untainted again, so later specs find every node as they expect.
func endPartition(t *testing.T, c *Cluster, node string) {
	t.Helper()
	if err := c.Sandbox.EndNodePartition(context.Background(), node); err != nil {
		t.Fatal(err)
	}
	c.Eventually(t, node+" Ready and untainted again", func(ctx context.Context) error {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !nodeReady(n) {
			return fmt.Errorf("node %s not Ready yet", node)
		}
		for _, taint := range n.Spec.Taints {
			if taint.Key == corev1.TaintNodeNotReady || taint.Key == corev1.TaintNodeUnreachable {
				return fmt.Errorf("node %s still has taint %s", node, taint.Key)
			}
		}
		return nil
	})
}
