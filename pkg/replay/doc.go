// Package replay is the engine of the replay sidecar (cmd/ms2m-replay): it
// owns the pod's Kafka consumption and delivers each message to the app over
// HTTP, committing an offset only after the app acknowledged it. Because of
// that, the sidecar knows per partition the offset up to which the app's
// memory is exact, which is what makes a migration's handover exact.
//
// A record's key and headers may be any bytes, which HTTP headers cannot
// carry as they are; an app in Go decodes them with KeyFrom and HeadersFrom
// (docs/app-contract.md describes the encoding for other languages).
package replay
