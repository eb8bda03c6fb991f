// Package scheduler is the kube-scheduler extender that admits only nodes
// able to restore a CRIU checkpoint and scores them by how cheap the move is.
//
// It exists because the scheduler cannot know what restoring a checkpoint
// needs: a runtime with restore enabled and CRIU (labels the ms2m agent
// sets), the source node's architecture, OS and a kernel at least as new,
// and a node other than the one the pod is leaving. The filter is a named
// Chain of checks (DefaultChecks); each refusal carries a reason the user
// reads in the pod's FailedScheduling event, and refusals no preemption can
// fix go into FailedAndUnresolvableNodes so the scheduler evicts nothing for
// them.
//
// The migration controller's automatic target choice (a StatefulMigration
// with an empty targetNode) must call RankNodes with DefaultChecks and
// DefaultScorer over the manager's Cache: the same code as the extender,
// not a copy, so a target the controller picks is one the scheduler
// accepts.
//
// Only pods that request the ms2m.io/checkpoint-restore extended resource,
// which the pod mutation webhook adds to the replay sidecar, are sent here:
// see docs/scheduler.md for the KubeSchedulerConfiguration.
package scheduler
