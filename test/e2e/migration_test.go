package e2e

import "testing"

func TestMigrateDeploymentPod(t *testing.T) {
	testenv.Test(t, MigrationSpec(MigrationInput{Cluster: cluster, Rate: 40, Count: 300}))
}

func TestMigrateBarePod(t *testing.T) {
	testenv.Test(t, MigrationSpec(MigrationInput{Cluster: cluster, Bare: true, Rate: 40, Count: 300}))
}
