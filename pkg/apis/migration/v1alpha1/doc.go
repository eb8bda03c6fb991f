// Package v1alpha1 holds the StatefulMigration API: the one object a user
// creates (or kubectl drain creates for them) to move a stateful,
// Kafka-driven pod to another node without losing a message.
//
// The package imports only API machinery so that clients, webhooks and the
// scheduler extender can depend on it without pulling in the controller.
// Structural validation lives here as OpenAPI and CEL markers and is enforced
// by the API server; checks that need other objects (the pod exists, the
// target node can restore a checkpoint) belong to the controller and are
// reported through Status.Conditions.
//
// +kubebuilder:object:generate=true
// +groupName=migration.ms2m.io
package v1alpha1
