package e2e

import "testing"

func TestTargetNodeNotReady(t *testing.T) {
	testenv.Test(t, TargetNodeNotReadySpec(TargetNodeNotReadyInput{Cluster: cluster, Rate: 10, Count: 800}))
}
