package agent

// Reasons of the Events the agent records on its node when its probe's
// outcome changes (kubectl describe node shows them).
const (
	// ReasonCheckpointRestoreAvailable: the node restores checkpoints; the
	// message names the runtime and the criu found, and its version's
	// source.
	ReasonCheckpointRestoreAvailable = "CheckpointRestoreAvailable"
	// ReasonCheckpointRestoreUnavailable: the node cannot restore; the
	// message lists every problem with the setting or file to change.
	ReasonCheckpointRestoreUnavailable = "CheckpointRestoreUnavailable"
)
