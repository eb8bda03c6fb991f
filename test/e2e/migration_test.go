package e2e

import "testing"

func TestLiveZeroLoss(t *testing.T) {
	testenv.Test(t, LiveZeroLossSpec(SpecInput{Cluster: cluster, Load: Load{Rate: 50, Count: 200}}))
}

func TestMigrateDeploymentPod(t *testing.T) {
	testenv.Test(t, MigrationSpec(MigrationInput{SpecInput: SpecInput{Cluster: cluster, Load: Load{Rate: 40, Count: 300}}}))
}

func TestMigrateBarePod(t *testing.T) {
	testenv.Test(t, MigrationSpec(MigrationInput{SpecInput: SpecInput{Cluster: cluster, Load: Load{Rate: 40, Count: 300}}, Bare: true}))
}

func TestStopAndCopy(t *testing.T) {
	testenv.Test(t, StopAndCopySpec(SpecInput{Cluster: cluster, Load: Load{Rate: 40, Count: 300}}))
}

func TestStatefulSetMigration(t *testing.T) {
	testenv.Test(t, StatefulSetMigrationSpec(SpecInput{Cluster: cluster, Load: Load{Rate: 30, Count: 300}}))
}

func TestReplicaOfThree(t *testing.T) {
	testenv.Test(t, ReplicaOfThreeSpec(ReplicaOfThreeInput{SpecInput: SpecInput{Cluster: cluster, Load: Load{Rate: 30, Count: 300}}}))
}

func TestStatefulSetReplicaOfThree(t *testing.T) {
	testenv.Test(t, ReplicaOfThreeSpec(ReplicaOfThreeInput{SpecInput: SpecInput{Cluster: cluster, Load: Load{Rate: 30, Count: 300}}, StatefulSet: true}))
}

func TestPlugin(t *testing.T) {
	testenv.Test(t, PluginSpec(SpecInput{Cluster: cluster, Load: Load{Rate: 30, Count: 300}}))
}

func TestBadInput(t *testing.T) {
	testenv.Test(t, BadInputSpec(SpecInput{Cluster: cluster, Load: Load{Rate: 20, Count: 10}}))
}

func TestRollback(t *testing.T) {
	testenv.Test(t, RollbackSpec(SpecInput{Cluster: cluster, Load: Load{Rate: 30, Count: 450}}))
}

func TestRunAsNonRoot(t *testing.T) {
	testenv.Test(t, RunAsNonRootSpec(SpecInput{Cluster: cluster, Load: Load{Rate: 30, Count: 300}}))
}

func TestBaseImagePull(t *testing.T) {
	testenv.Test(t, BaseImagePullSpec(SpecInput{Cluster: cluster, Load: Load{Rate: 30, Count: 300}}))
}
