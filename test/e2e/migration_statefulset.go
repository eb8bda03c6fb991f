package e2e

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/ms2m/ms2m/internal/example/deploy"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// StatefulSetMigrationSpec: a StatefulSet's pod is migrated with the
// identity-preserving Sequential strategy under load: the pod keeps its
// name (ordinal) and its StatefulSet owner, runs on another node restored
// from the checkpoint, nothing is lost or processed twice live, and the
// downtime this costs (fence → restored pod live) is reported.
func StatefulSetMigrationSpec(in SpecInput) features.Feature {
	return feature("live migration of a StatefulSet's pod (Sequential)", "same name and owner on another node, zero loss", func(ctx context.Context, t *testing.T) {
		s := in.open(t, "sts", func(e *deploy.Example) { e.StatefulSet = true })
		src := s.deploy(ctx, in.Load.Count/3).Pod
		m := s.migrateWithProgress(ctx, src.Name)
		if m.Status.Strategy != v1.StrategySequential || m.Status.TargetPod != src.Name || m.Status.Downtime == nil {
			t.Fatalf("strategy %s, target pod %q (want %s), downtime %v", m.Status.Strategy, m.Status.TargetPod, src.Name, m.Status.Downtime)
		}
		t.Logf("Sequential downtime (fence → restored pod live): %s", m.Status.Downtime.Duration)
		p := s.verifyZeroLoss(ctx).Pod
		ref, srcRef := metav1.GetControllerOf(p), metav1.GetControllerOf(src)
		switch {
		case p.Name != src.Name || p.UID == src.UID:
			t.Fatalf("consumer is %s (uid %s); want a new pod named %s", p.Name, p.UID, src.Name)
		case p.Spec.NodeName != m.Status.TargetNode || p.Spec.NodeName == src.Spec.NodeName:
			t.Fatalf("consumer on %s; want the target %s (source was on %s)", p.Spec.NodeName, m.Status.TargetNode, src.Spec.NodeName)
		case ref == nil || srcRef == nil || ref.UID != srcRef.UID:
			t.Fatalf("owner %v; want the StatefulSet %v", ref, srcRef)
		case p.Labels[v1.LabelMigration] != "":
			t.Fatalf("the restored pod still carries %s", v1.LabelMigration)
		}
		for _, ctr := range p.Spec.Containers {
			if ctr.Name == "app" && ctr.Image != m.Status.CheckpointImage {
				t.Fatalf("app container runs %s; want the checkpoint image %s", ctr.Image, m.Status.CheckpointImage)
			}
		}
		pods, err := s.PodsReady(ctx, s.NS, "app=orders", 1)
		if err != nil || len(pods) != 1 {
			t.Fatalf("%d consumer pods (%v); want exactly the StatefulSet's one", len(pods), err)
		}
	})
}
