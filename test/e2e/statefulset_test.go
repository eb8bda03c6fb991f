package e2e

import "testing"

func TestStatefulSetMigration(t *testing.T) {
	testenv.Test(t, StatefulSetMigrationSpec(StatefulSetMigrationInput{Cluster: cluster, Rate: 30, Count: 300}))
}
