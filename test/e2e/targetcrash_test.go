package e2e

import "testing"

func TestTargetCrash(t *testing.T) {
	testenv.Test(t, TargetCrashSpec(TargetCrashInput{Cluster: cluster, Rate: 30, Count: 300}))
}

func TestCheckpointFailure(t *testing.T) {
	testenv.Test(t, CheckpointFailureSpec(TargetCrashInput{Cluster: cluster, Rate: 30, Count: 300}))
}
