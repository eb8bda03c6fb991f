package e2e

import "testing"

func TestDrainNonMigratable(t *testing.T) {
	testenv.Test(t, DrainSpec(DrainInput{Cluster: cluster}))
}
