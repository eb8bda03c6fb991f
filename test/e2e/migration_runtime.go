package e2e

import (
	"context"
	"testing"

	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/ms2m/ms2m/internal/example/deploy"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migratable"
	"github.com/ms2m/ms2m/pkg/sandbox/kubelet"
)

// RunAsNonRootSpec: a pod with runAsNonRoot and no runAsUser migrates. The
// kubelet verifies such a container against its image's user, and a
// checkpoint image whose config names none would run as root: the target
// would sit in CreateContainerConfigError. The image carries the
// checkpointed process's user. The target also pulls its base image
// first, in an init container run from that image as non-root.
func RunAsNonRootSpec(in SpecInput) features.Feature {
	return feature("runAsNonRoot without runAsUser", "the target starts from the checkpoint image; zero loss", func(ctx context.Context, t *testing.T) {
		s := in.open(t, "nonroot", func(e *deploy.Example) { e.RunAsNonRoot = true })
		src := s.deploy(ctx, in.Load.Count/4).Pod
		got := s.completed(s.migrate(ctx, "move", src.Name, v1.StatefulMigrationSpec{}))
		t.Logf("migrated to %s on %s", got.Status.TargetPod, got.Status.TargetNode)
		after := s.verifyZeroLoss(ctx)
		// The target pulled its base image before its app was restored:
		// the init container that runs from it, as non-root, exited 0.
		pulled := false
		for _, st := range after.Pod.Status.InitContainerStatuses {
			if st.Name == migratable.InitPullBase && st.State.Terminated != nil && st.State.Terminated.ExitCode == 0 {
				pulled = st.Image == src.Spec.Containers[0].Image
			}
		}
		if !pulled {
			t.Errorf("the target %s did not run %s from the base image %s: %+v", after.Pod.Name, migratable.InitPullBase, src.Spec.Containers[0].Image, after.Pod.Status.InitContainerStatuses)
		}
	})
}

// BaseImagePullSpec: the app's image is one no node holds until a pod uses
// it. A pod on a CRI-O node and one on a containerd node each migrate to
// the other node of their runtime, which does not hold it: CRI-O restores
// only from a base image in the node's store and does not pull it
// (containerd pulls it). Both complete with zero loss, the target having
// pulled the base image in its init container first. On both runtimes the
// source's checkpoint pause ended when the runtime let the container run
// again (its cgroup's last thaw), not when the kubelet answered: on
// containerd, which writes the archive after that, earlier.
func BaseImagePullSpec(in SpecInput) features.Feature {
	return feature("target without the base image", "a CRI-O and a containerd target pull it first; both complete, zero loss; the pause ends at the runtime's thaw", func(ctx context.Context, t *testing.T) {
		in.Cluster.sandboxOnly(t, "reads the simulated nodes' image stores")
		image := kubelet.SecondProjectImage + ":v0.1.0"
		for _, runtime := range []string{kubelet.FlavourCRIO, kubelet.FlavourContainerd} {
			nodes := in.Cluster.schedulableNodes(t, v1.LabelCheckpointRestore+"=true,"+v1.LabelRuntime+"="+runtime)
			if len(nodes) < 2 {
				t.Fatalf("needs two nodes that restore as %s, have %v", runtime, nodes)
			}
			src, dst := nodes[0], nodes[1]
			if in.Cluster.Sandbox.Fleet.Holds(dst, image) {
				t.Fatalf("%s holds %s already: nothing to check", dst, image)
			}
			// A group of its own: the first pod still consumes when the second starts.
			s := in.open(t, "baseimg", func(e *deploy.Example) { e.AppImage, e.Bare, e.Node, e.Group = image, true, src, "orders-"+runtime })
			pod := s.deploy(ctx, in.Load.Count/4).Pod
			got := s.completed(s.migrate(ctx, "move", pod.Name, v1.StatefulMigrationSpec{TargetNode: dst}))
			s.verifyZeroLoss(ctx)
			if !in.Cluster.Sandbox.Fleet.Holds(dst, image) {
				t.Errorf("%s: the target node %s does not hold the base image after the restore", runtime, dst)
			}
			ck, err := v1.AgentResultOf(got, v1.AnnotationAgentCheckpoint)
			switch {
			case err != nil || ck == nil || ck.Steps == nil:
				t.Errorf("%s: no checkpoint steps reported (%v)", runtime, err)
			case !ck.Steps.ResumedAtThaw:
				t.Errorf("%s: the source's sidecar was resumed only when the kubelet answered: %s", runtime, ck.Steps)
			case runtime == kubelet.FlavourContainerd && ck.Steps.KubeletAfterThaw.Duration <= 0:
				t.Errorf("%s: the kubelet answered no later than the thaw, though containerd writes the archive after it: %s", runtime, ck.Steps)
			default:
				t.Logf("%s: checkpoint %s", runtime, ck.Steps)
			}
			t.Logf("%s: %s/%s moved from %s to %s, which did not hold %s; restored after its %s init container, zero loss",
				runtime, s.NS, pod.Name, src, got.Status.TargetNode, image, migratable.InitPullBase)
		}
	})
}
