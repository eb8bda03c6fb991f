package e2e

import "testing"

func TestFaults(t *testing.T) {
	testenv.Test(t, FaultsSpec(FaultsInput{Cluster: cluster}))
}
