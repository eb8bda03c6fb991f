package e2e

import "testing"

func TestManagerRestart(t *testing.T) {
	testenv.Test(t, ManagerRestartSpec(ManagerRestartInput{Cluster: cluster, Rate: 30, Count: 300}))
}
