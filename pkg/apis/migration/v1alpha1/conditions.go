package v1alpha1

// Condition types of a StatefulMigration. Each is set once the step it names
// has been attempted; Ready summarises the whole migration.
const (
	// ConditionReady is True when the migration completed and the target
	// serves live; False with the failure reason when it failed; Unknown
	// while it is in progress.
	ConditionReady = "Ready"
	// ConditionValidated is True when the source pod and the target node
	// passed the controller's checks against the cluster.
	ConditionValidated = "Validated"
	// ConditionCheckpointed is True when every app container was
	// checkpointed and the offsets O were recorded.
	ConditionCheckpointed = "Checkpointed"
	// ConditionImagePushed is True when the checkpoint image is in the
	// registry and its digest recorded.
	ConditionImagePushed = "ImagePushed"
	// ConditionTargetRestored is True when the target pod runs from the
	// checkpoint image.
	ConditionTargetRestored = "TargetRestored"
	// ConditionReplayCaughtUp is True when the target's replay lag fit the
	// downtime budget (or the cutoff was reached: see its reason).
	ConditionReplayCaughtUp = "ReplayCaughtUp"
	// ConditionHandedOver is True when the target processes live from the
	// fence offsets F.
	ConditionHandedOver = "HandedOver"
	// ConditionRolledBack is True when a failed or cancelled migration was
	// undone: source resumed, target and image removed.
	ConditionRolledBack = "RolledBack"
)

// HandoverPathPrefix precedes, in the HandedOver condition's message, where
// the handover's stall went ("fence call 4.4ms, controller 0.2ms, handover
// call 12.8ms (target 2 messages behind the fence: ...)"), which
// `kubectl ms2m` and the sandbox's demo show.
const HandoverPathPrefix = "; the handover: "

// Condition reasons. They are also the reasons of the Events the controller
// emits, so a user sees the same word in `kubectl describe` and in status.
const (
	ReasonInProgress          = "InProgress"
	ReasonSucceeded           = "Succeeded"
	ReasonWaitingForCapacity  = "WaitingForCapacity"
	ReasonSourcePodNotFound   = "SourcePodNotFound"
	ReasonSourcePodNotRunning = "SourcePodNotRunning"
	ReasonSourceNotMigratable = "SourcePodNotMigratable"
	ReasonTargetNodeNotFound  = "TargetNodeNotFound"
	ReasonTargetNodeNotReady  = "TargetNodeNotReady"
	ReasonTargetUnschedulable = "TargetNodeUnschedulable"
	ReasonTargetIsSource      = "TargetNodeIsSource"
	ReasonTargetCannotRestore = "TargetNodeCannotRestore"
	ReasonNoEligibleTarget    = "NoEligibleTargetNode"
	ReasonAlreadyMigrating    = "MigrationAlreadyActive"
	ReasonInvalidKafkaBinding = "InvalidKafkaBinding"
	ReasonBrokerUnreachable   = "BrokerUnreachable"
	ReasonCheckpointFailed    = "CheckpointFailed"
	ReasonPushFailed          = "ImagePushFailed"
	ReasonRestoreFailed       = "RestoreFailed"
	ReasonReplayCutoff        = "ReplayCutoffReached"
	ReasonCaughtUp            = "CaughtUp"
	ReasonHandoverFailed      = "HandoverFailed"
	ReasonPhaseTimedOut       = "PhaseTimedOut"
	ReasonCancelled           = "Cancelled"
	ReasonDisruptionBudget    = "WaitingForDisruptionBudget"
	// ReasonDisruptionBudgetTimedOut: a PodDisruptionBudget allowed no
	// disruption for the handover within the manager's
	// --disruption-budget-timeout; the source serves on.
	ReasonDisruptionBudgetTimedOut = "DisruptionBudgetTimedOut"
	// ReasonTargetPodRefused: the API server would not admit the target
	// pod (an admission policy, Pod Security, a quota), found by a dry
	// run in Pending, before the source is touched.
	ReasonTargetPodRefused = "TargetPodRefused"
)
