package e2e

import (
	"context"
	"testing"

	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/ms2m/ms2m/internal/example/deploy"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// RunAsNonRootSpec: a pod with runAsNonRoot and no runAsUser migrates. The
// kubelet verifies such a container against its image's user, and a
// checkpoint image whose config names none would run as root: the target
// would sit in CreateContainerConfigError. The image carries the
// checkpointed process's user.
func RunAsNonRootSpec(in SpecInput) features.Feature {
	return feature("runAsNonRoot without runAsUser", "the target starts from the checkpoint image; zero loss", func(ctx context.Context, t *testing.T) {
		s := in.open(t, "nonroot", func(e *deploy.Example) { e.RunAsNonRoot = true })
		src := s.deploy(ctx, in.Load.Count/4).Pod
		got := s.completed(s.migrate(ctx, "move", src.Name, v1.StatefulMigrationSpec{}))
		t.Logf("migrated to %s on %s", got.Status.TargetPod, got.Status.TargetNode)
		s.verifyZeroLoss(ctx)
	})
}
