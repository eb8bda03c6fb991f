package e2e

import "testing"

func TestDrainNonMigratable(t *testing.T) {
	testenv.Test(t, DrainSpec(cluster))
}

func TestDrainMigratable(t *testing.T) {
	testenv.Test(t, DrainMigratableSpec(SpecInput{Cluster: cluster, Load: Load{Rate: 30, Count: 300}}))
}

func TestDrainWithoutTarget(t *testing.T) {
	testenv.Test(t, DrainWithoutTargetSpec(SpecInput{Cluster: cluster, Load: Load{Rate: 30, Count: 300}}))
}

func TestDisruptionBudget(t *testing.T) {
	testenv.Test(t, DisruptionBudgetSpec(SpecInput{Cluster: cluster, Load: Load{Rate: 30, Count: 300}}))
}

func TestDrainTwoOfThree(t *testing.T) {
	testenv.Test(t, DrainTwoOfThreeSpec(SpecInput{Cluster: cluster, Load: Load{Rate: 30, Count: 600}}))
}
