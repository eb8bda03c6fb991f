package e2e

import "testing"

func TestWorkloadsRun(t *testing.T) {
	testenv.Test(t, WorkloadsRunSpec(WorkloadsInput{Cluster: cluster, Replicas: 2}))
}
