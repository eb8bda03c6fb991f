package e2e

import (
	"context"
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"
)

// WorkloadsInput configures WorkloadsRunSpec.
type WorkloadsInput struct {
	Cluster  *Cluster
	Replicas int32
}

// WorkloadsRunSpec: a Deployment and a StatefulSet of the example consumer
// reach Running and Ready on the nodes, through the real
// controller-manager and scheduler, and each pod serves on its own address.
func WorkloadsRunSpec(in WorkloadsInput) features.Feature {
	var ns string
	return features.New("a Deployment and a StatefulSet of the example run").
		Setup(func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			ns = in.Cluster.Namespace(t, "workloads")
			return ctx
		}).
		Assess("Deployment pods Running, Ready, serving", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			c := in.Cluster
			sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "deploy"}}
			d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "consumer"},
				Spec: appsv1.DeploymentSpec{Replicas: &in.Replicas, Selector: sel, Template: podTemplate("deploy")}}
			if _, err := c.Client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			assertServing(ctx, t, c, ns, "app=deploy", int(in.Replicas))
			return ctx
		}).
		Assess("StatefulSet pods Running, Ready, in ordinal order", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			c := in.Cluster
			sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "sts"}}
			s := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "consumer"},
				Spec: appsv1.StatefulSetSpec{Replicas: &in.Replicas, Selector: sel, Template: podTemplate("sts"), ServiceName: "consumer"}}
			if _, err := c.Client.AppsV1().StatefulSets(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			pods := assertServing(ctx, t, c, ns, "app=sts", int(in.Replicas))
			names := map[string]bool{}
			for _, p := range pods {
				names[p.Name] = true
			}
			for i := range in.Replicas {
				if name := fmt.Sprintf("consumer-%d", i); !names[name] {
					t.Errorf("StatefulSet pod %s missing; have %v", name, names)
				}
			}
			return ctx
		}).Feature()
}
