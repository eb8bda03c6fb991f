package e2e

import "testing"

func TestCheckpointRestore(t *testing.T) {
	testenv.Test(t, CheckpointRestoreSpec(CheckpointInput{Cluster: cluster, Messages: 50}))
}
