package e2e

import "testing"

func TestTargetCrash(t *testing.T) {
	testenv.Test(t, TargetCrashSpec(SpecInput{Cluster: cluster, Load: Load{Rate: 30, Count: 300}}))
}

func TestCheckpointFailure(t *testing.T) {
	testenv.Test(t, CheckpointFailureSpec(SpecInput{Cluster: cluster, Load: Load{Rate: 30, Count: 300}}))
}

func TestBrokerRestart(t *testing.T) {
	testenv.Test(t, BrokerRestartSpec(SpecInput{Cluster: cluster, Load: Load{Rate: 60, Count: 300}}))
}

func TestTargetNodeNotReady(t *testing.T) {
	testenv.Test(t, TargetNodeNotReadySpec(SpecInput{Cluster: cluster, Load: Load{Rate: 10, Count: 800}}))
}

func TestManagerRestart(t *testing.T) {
	testenv.Test(t, ManagerRestartSpec(SpecInput{Cluster: cluster, Load: Load{Rate: 30, Count: 300}}))
}

func TestSidecarRestart(t *testing.T) {
	testenv.Test(t, SidecarRestartSpec(SpecInput{Cluster: cluster, Load: Load{Rate: 30, Count: 300}}))
}

func TestAppRestart(t *testing.T) {
	testenv.Test(t, AppRestartSpec(SpecInput{Cluster: cluster, Load: Load{Rate: 30, Count: 600}}))
}

func TestTCPConnection(t *testing.T) {
	testenv.Test(t, TCPConnectionSpec(SpecInput{Cluster: cluster, Load: Load{Rate: 30, Count: 600}}))
}
