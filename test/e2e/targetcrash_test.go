package e2e

import "testing"

func TestTargetCrash(t *testing.T) {
	testenv.Test(t, TargetCrashSpec(TargetCrashInput{Cluster: cluster, Rate: 30, Count: 300}))
}
