package e2e

import "testing"

func TestRollback(t *testing.T) {
	testenv.Test(t, RollbackSpec(RollbackInput{Cluster: cluster, Rate: 30, Count: 450}))
}
