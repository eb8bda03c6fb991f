package e2e

import "testing"

func TestTargetNodeNotReady(t *testing.T) {
	testenv.Test(t, TargetNodeNotReadySpec(FaultUnderLoadInput{Cluster: cluster, Rate: 10, Count: 800}))
}
