// Package webhooks holds ms2m's admission webhooks, one file per admitted
// kind and operation: pod mutation (injecting the replay sidecar into pods
// annotated ms2m.io/migratable) and pods/eviction validation (turning a
// `kubectl drain` into a live migration). They are served by ms2m-manager.
package webhooks
