package e2e

import "testing"

func TestBadInput(t *testing.T) {
	testenv.Test(t, BadInputSpec(BadInputInput{Cluster: cluster}))
}
