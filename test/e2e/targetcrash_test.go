package e2e

import "testing"

func TestTargetCrash(t *testing.T) {
	testenv.Test(t, TargetCrashSpec(FaultUnderLoadInput{Cluster: cluster, Rate: 30, Count: 300}))
}

func TestCheckpointFailure(t *testing.T) {
	testenv.Test(t, CheckpointFailureSpec(FaultUnderLoadInput{Cluster: cluster, Rate: 30, Count: 300}))
}

func TestBrokerRestart(t *testing.T) {
	testenv.Test(t, BrokerRestartSpec(FaultUnderLoadInput{Cluster: cluster, Rate: 60, Count: 300}))
}
