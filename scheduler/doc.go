// Package scheduler is the kube-scheduler extender that admits only nodes
// able to restore a CRIU checkpoint and scores them by how cheap the move is.
// The controller's automatic target choice uses the same scoring.
package scheduler
