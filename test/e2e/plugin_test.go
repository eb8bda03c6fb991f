package e2e

import "testing"

func TestPlugin(t *testing.T) {
	testenv.Test(t, PluginSpec(PluginInput{Cluster: cluster, Rate: 30, Count: 300}))
}
