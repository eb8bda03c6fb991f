package e2e

import (
	"context"
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"
)

// DrainSpec: `kubectl drain` (the real one) of a node running ordinary,
// non-migratable pods evicts them, the kubelet finishes their deletion,
// the Deployment replaces them on other nodes, and kubectl exits 0.
func DrainSpec(c *Cluster) features.Feature {
	var ns, drained string
	return features.New("kubectl drain of a node with non-migratable pods").
		Setup(func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			ns = c.Namespace(t, "drain")
			replicas := int32(3)
			sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "drain"}}
			d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "consumer"},
				Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: sel, Template: podTemplate("drain")}}
			if _, err := c.Client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			pods := assertServing(ctx, t, c, ns, "app=drain", 3)
			drained = pods[0].Spec.NodeName
			t.Cleanup(func() { _, _ = c.Kubectl(context.Background(), "uncordon", drained) })
			return ctx
		}).
		Assess("drain exits 0 and the pods run elsewhere", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			out, err := c.Kubectl(ctx, "drain", drained, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=120s")
			if err != nil {
				t.Fatalf("kubectl drain %s: %v\n%s", drained, err, out)
			}
			c.Eventually(t, "replacement pods on other nodes", func(ctx context.Context) error {
				pods, err := c.PodsReady(ctx, ns, "app=drain", 3)
				if err != nil {
					return err
				}
				for _, p := range pods {
					if p.Spec.NodeName == drained {
						return fmt.Errorf("pod %s still on drained node %s", p.Name, drained)
					}
				}
				return nil
			})
			node, err := c.Client.CoreV1().Nodes().Get(ctx, drained, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !node.Spec.Unschedulable {
				t.Errorf("drained node %s is not cordoned", drained)
			}
			all, err := c.Client.CoreV1().Pods(corev1.NamespaceAll).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + drained})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range all.Items {
				if p.Namespace == ns {
					t.Errorf("pod %s/%s left on the drained node", p.Namespace, p.Name)
				}
			}
			return ctx
		}).Feature()
}
