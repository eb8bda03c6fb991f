package e2e

import "testing"

func TestNodesReady(t *testing.T) {
	testenv.Test(t, NodesReadySpec(NodesReadyInput{Cluster: cluster, MinNodes: 3}))
}
