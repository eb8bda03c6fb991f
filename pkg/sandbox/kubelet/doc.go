// Package kubelet is the sandbox's simulated kubelet: it registers Node
// objects that heartbeat like real ones, runs the pods bound to them, and
// serves the kubelet checkpoint API — so that the real scheduler,
// controller-manager, kubectl drain and the ms2m controller work against
// them unchanged.
//
// What is real and what is simulated:
//
//   - Node objects, Leases, pod status (IPs, container statuses, readiness
//     gates, restart counts), graceful deletion and the final delete are what
//     a kubelet writes, through the real API server.
//   - Containers whose image is one of the project's images (Runtime.
//     ProjectImages) run as local processes: the image's command names a
//     binary that is looked up by base name in Runtime.BinDir (so
//     ghcr.io/ms2m/ms2m with command /ms2m/example-consumer runs
//     $BinDir/example-consumer). Each pod has its own loopback address
//     (127.1.x.y) that its processes bind, and a kubeconfig carrying a token
//     for its service account from the TokenRequest API (env KUBECONFIG).
//   - Any other image is marked Running without a process, so scale tests
//     can hold thousands of pods.
//   - Checkpoint and restore use a SIMULATED CRIU (package simcriu): the
//     process hands its memory state to the runtime through a runtime-only
//     hook; restore starts the same binary from that state. A container
//     whose image, in the sandbox registry, is a checkpoint image is
//     restored that way.
package kubelet
