package e2e

import "testing"

func TestDrainNonMigratable(t *testing.T) {
	testenv.Test(t, DrainSpec(DrainInput{Cluster: cluster}))
}

func TestDrainMigratable(t *testing.T) {
	testenv.Test(t, DrainMigratableSpec(DrainMigratableInput{Cluster: cluster, Rate: 30, Count: 300}))
}

func TestDrainWithoutTarget(t *testing.T) {
	testenv.Test(t, DrainWithoutTargetSpec(DrainMigratableInput{Cluster: cluster, Rate: 30, Count: 300}))
}

func TestDisruptionBudget(t *testing.T) {
	testenv.Test(t, DisruptionBudgetSpec(DrainMigratableInput{Cluster: cluster, Rate: 30, Count: 300}))
}
