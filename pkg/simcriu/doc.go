// Package simcriu is the sandbox's SIMULATED CRIU.
//
// CRIU cannot run on the machines ms2m is developed on (no container engine,
// and CRIU fails its kernel checks), yet the rest of a migration — the
// kubelet checkpoint API, the OCI checkpoint image, the restore on another
// node — can run for real. This package stands in for CRIU and nothing
// else, and says so wherever it shows (archive dump.log, logs, docs):
//
//   - Dump: instead of freezing a process and copying its pages, the
//     simulated runtime asks the process for its memory state through a
//     runtime-only hook: a unix socket in the pod's private runtime
//     directory whose path only the runtime passes in (EnvHook). An app
//     opts in with ServeHook.
//   - Archive: the dump is written into a tar laid out like CRI-O's
//     checkpoint archive (config.dump, spec.dump, checkpoint/,
//     rootfs-diff.tar, stats-dump, dump.log).
//   - Restore: the runtime starts the same binary with EnvRestore naming the
//     memory image; the app reads it with RestoredState before serving.
//
// On a real cluster none of this is used: CRIU checkpoints the process
// whole, and the app needs no hook.
package simcriu
