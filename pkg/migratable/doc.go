// Package migratable is what the pod mutation webhook and the migration
// controller both need to know about a migratable pod: its Kafka binding
// (the ms2m.io/* annotations, and a StatefulMigration's spec in their
// place), the containers a migration checkpoints, and how a migration's
// target pod and a restored StatefulSet pod are built from the source.
//
// It sits one floor below both so that neither imports the other: the
// webhook restores a StatefulSet's recreated pod with the same code the
// controller builds its target pods with.
package migratable
