package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/ms2m/ms2m/internal/example/deploy"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/checkpoint"
)

// MigrationInput configures MigrationSpec.
type MigrationInput struct {
	SpecInput
	// Bare migrates a pod without an owner; otherwise a Deployment's pod.
	Bare bool
}

// MigrationSpec: the example consumer is migrated live under a steady
// producer: the migration completes, nothing is lost or processed twice
// live, the final state equals the fold of the input (a run without
// migration), the owner is left consistent, and the checkpoint image in the
// registry carries the runtime's annotations, and is deleted with the
// restored pod.
func MigrationSpec(in MigrationInput) features.Feature {
	kind := "Deployment's pod"
	if in.Bare {
		kind = "bare pod"
	}
	return feature("live migration of a "+kind+" under load", "completes with zero loss and the owner consistent", func(ctx context.Context, t *testing.T) {
		s := in.open(t, "migrate", func(e *deploy.Example) { e.Bare = in.Bare })
		d := s.deploy(ctx, in.Load.Count/3)
		m := s.migrateWithProgress(ctx, d.Pod.Name)
		if m.Status.TargetNode == m.Status.SourceNode || m.Status.Downtime == nil || len(m.Status.FenceOffsets) == 0 {
			t.Fatalf("status: source %s target %s downtime %v fence %v", m.Status.SourceNode, m.Status.TargetNode, m.Status.Downtime, m.Status.FenceOffsets)
		}
		after := s.verifyZeroLoss(ctx)
		if after.Pod.Name != m.Status.TargetPod || after.Pod.Spec.NodeName != m.Status.TargetNode {
			t.Fatalf("consumer now %s on %s, want the target %s on %s", after.Pod.Name, after.Pod.Spec.NodeName, m.Status.TargetPod, m.Status.TargetNode)
		}
		assertOwner(ctx, t, s.Cluster, s.NS, d.Pod, after.Pod, in.Bare)
		assertCheckpointImage(ctx, t, m)
		assertImageGoesWithThePod(ctx, t, s.Cluster, m)
	})
}

// assertImageGoesWithThePod: once the restored pod is deleted, its
// checkpoint image (a process's whole memory) is deleted from the
// registry, and the migration says so in an Event.
func assertImageGoesWithThePod(ctx context.Context, t *testing.T, c *Cluster, m *v1.StatefulMigration) {
	t.Helper()
	target, err := c.Client.CoreV1().Pods(m.Namespace).Get(ctx, m.Status.TargetPod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if target.Annotations[v1.AnnotationCheckpointImage] != m.Status.CheckpointImage || !slices.Contains(target.Finalizers, v1.FinalizerCheckpointImage) {
		t.Fatalf("restored pod %s: annotation %q, finalizers %v; want the checkpoint image and its finalizer", target.Name,
			target.Annotations[v1.AnnotationCheckpointImage], target.Finalizers)
	}
	if err := c.Client.CoreV1().Pods(m.Namespace).Delete(ctx, target.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPodGone(t, c, m.Namespace, target.Name, "restored pod "+target.Name+" deleted")
	ref, err := name.ParseReference(m.Status.CheckpointImage)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := checkpoint.Pull(ctx, ref); err == nil {
		t.Fatalf("checkpoint image %s can still be pulled after the last pod running from it was deleted", ref)
	}
	c.Eventually(t, "a CheckpointImageDeleted Event on the migration", func(ctx context.Context) error {
		evs, err := c.Client.CoreV1().Events(m.Namespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + m.Name + ",reason=CheckpointImageDeleted"})
		if err != nil || len(evs.Items) == 0 {
			return fmt.Errorf("no CheckpointImageDeleted Event on %s (%v)", m.Name, err)
		}
		return nil
	})
}

// migrateWithProgress migrates pod as the demo does (deploy.Migrate, its
// progress logged), and fails the spec unless the migration Completed.
func (s *Spec) migrateWithProgress(ctx context.Context, pod string) *v1.StatefulMigration {
	s.t.Helper()
	m, err := deploy.Migrate(ctx, s.Config, s.NS, pod, "", s.t.Logf)
	if err != nil {
		s.t.Log(s.Describe(s.NS))
		s.t.Fatal(err)
	}
	s.t.Logf("migration %s:\n%s", m.Status.Phase, deploy.Timings(m))
	if m.Status.Phase != v1.PhaseCompleted {
		s.t.Log(s.Describe(s.NS))
		s.t.Fatalf("migration %s: %s", m.Status.Phase, m.Status.FailureReason)
	}
	return m
}

// assertOwner: the source is gone; a bare target has no owner; a
// ReplicaSet's target is owned by it and the replica count never changed.
func assertOwner(ctx context.Context, t *testing.T, c *Cluster, ns string, source, target *corev1.Pod, bare bool) {
	t.Helper()
	waitPodGone(t, c, ns, source.Name, "source pod "+source.Name+" gone")
	ref := metav1.GetControllerOf(target)
	if bare {
		if ref != nil {
			t.Fatalf("bare pod's target is owned by %s %s", ref.Kind, ref.Name)
		}
		return
	}
	srcRef := metav1.GetControllerOf(source)
	if ref == nil || srcRef == nil || ref.UID != srcRef.UID {
		t.Fatalf("target owner %v, want the source's %v", ref, srcRef)
	}
	pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=orders"})
	if err != nil {
		t.Fatal(err)
	}
	live := 0
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			live++
		}
	}
	if live != 1 {
		t.Fatalf("%d consumer pods, want exactly 1 (the ReplicaSet's count)", live)
	}
}

func assertCheckpointImage(ctx context.Context, t *testing.T, m *v1.StatefulMigration) {
	t.Helper()
	ref, err := name.ParseReference(m.Status.CheckpointImage)
	if err != nil {
		t.Fatal(err)
	}
	p, err := checkpoint.Pull(ctx, ref)
	if err != nil {
		t.Fatalf("checkpoint image %s: %v", m.Status.CheckpointImage, err)
	}
	if p.Container != "app" || p.Pod != m.Spec.SourcePod || p.Namespace != m.Namespace {
		t.Fatalf("checkpoint image annotations: %+v", p.Metadata)
	}
}
