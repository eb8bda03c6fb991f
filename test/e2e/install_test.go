package e2e

import (
	"context"
	"testing"

	"sigs.k8s.io/e2e-framework/pkg/env"
)

// TestHelmInstall installs ms2m with its Helm chart into a sandbox of its
// own, then migrates the example live there: the chart's components, with
// the chart's RBAC, do the whole job.
func TestHelmInstall(t *testing.T) {
	c := HelmSandbox(context.Background(), t, cluster)
	env.NewWithConfig(c.EnvConfig()).Test(t, ChartComponentsSpec(c), MigrationSpec(MigrationInput{SpecInput: SpecInput{Cluster: c, Load: Load{Rate: 40, Count: 300}}}))
}
