package e2e

import "testing"

func TestNodesReady(t *testing.T) {
	testenv.Test(t, NodesReadySpec(NodesReadyInput{Cluster: cluster, MinNodes: 3}))
}

func TestWorkloadsRun(t *testing.T) {
	testenv.Test(t, WorkloadsRunSpec(WorkloadsInput{Cluster: cluster, Replicas: 2}))
}

func TestKubeletFaults(t *testing.T) {
	testenv.Test(t, KubeletFaultsSpec(cluster))
}

func TestCheckpointRestore(t *testing.T) {
	testenv.Test(t, CheckpointRestoreSpec(CheckpointInput{Cluster: cluster, Messages: 50}))
}
