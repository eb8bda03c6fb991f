package e2e

import (
	"context"
	"testing"

	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/ms2m/ms2m/internal/example/deploy"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migratable"
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
