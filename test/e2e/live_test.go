package e2e

import "testing"

func TestLiveZeroLoss(t *testing.T) {
	testenv.Test(t, LiveZeroLossSpec(LiveInput{Cluster: cluster, Brokers: cluster.Brokers, Rate: 50, Count: 200}))
}
