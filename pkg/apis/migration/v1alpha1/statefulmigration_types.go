package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Strategy says how the target pod coexists with the source.
// +kubebuilder:validation:Enum=Auto;ShadowPod;Sequential;StopAndCopy
type Strategy string

const (
	// StrategyAuto picks ShadowPod for bare pods and ReplicaSet-owned pods
	// and Sequential for StatefulSet pods, whose identity forbids two pods of
	// the same name.
	StrategyAuto Strategy = "Auto"
	// StrategyShadowPod runs the target next to the source (under another
	// name) while it replays; the source serves until the fence. Downtime is
	// the checkpoint pause plus fence → target live.
	StrategyShadowPod Strategy = "ShadowPod"
	// StrategySequential stops the source at the fence before a pod of the
	// same name is created on the target: it keeps the pod's name, ordinal,
	// PVCs and ownership at the cost of the restore time in the downtime.
	StrategySequential Strategy = "Sequential"
	// StrategyStopAndCopy is the classic cold migration the MS2M papers
	// compare with, on the same checkpoint, image and restore path: the
	// source stays stopped from its checkpoint until the target is live
	// (checkpoint, transfer and restore are all downtime), and the target
	// has nothing to replay. For a bare or ReplicaSet pod whose app must
	// not process while its copy is restored, and the baseline of
	// docs/benchmarks.md.
	StrategyStopAndCopy Strategy = "StopAndCopy"
)

// StopsForCheckpoint reports whether the source stays stopped from its
// checkpoint to the handover: its node agent pauses it for the checkpoint
// and does not resume it; the controller fences it where it paused.
func (s Strategy) StopsForCheckpoint() bool { return s == StrategyStopAndCopy }

// Phase is the step a migration is in. Phases only move forward; Failed
// means the migration was rolled back and the source is serving.
// +kubebuilder:validation:Enum=Pending;Checkpointing;Transferring;Restoring;Replaying;Finalizing;Completed;Failed
type Phase string

const (
	PhasePending       Phase = "Pending"
	PhaseCheckpointing Phase = "Checkpointing"
	PhaseTransferring  Phase = "Transferring"
	PhaseRestoring     Phase = "Restoring"
	PhaseReplaying     Phase = "Replaying"
	PhaseFinalizing    Phase = "Finalizing"
	PhaseCompleted     Phase = "Completed"
	PhaseFailed        Phase = "Failed"
)

// IsTerminal reports whether no further work happens in this phase.
func (p Phase) IsTerminal() bool { return p == PhaseCompleted || p == PhaseFailed }

// BrokerAddress is a Kafka bootstrap address, host:port.
// +kubebuilder:validation:MaxLength=261
// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?:[0-9]{1,5}$')",message="must be host:port, for example kafka-0.kafka:9092"
// +kubebuilder:validation:XValidation:rule="!self.matches(':[0-9]{1,5}$') || (int(self.substring(self.lastIndexOf(':') + 1)) >= 1 && int(self.substring(self.lastIndexOf(':') + 1)) <= 65535)",message="port must be between 1 and 65535"
type BrokerAddress string

// MessageQueueConfig binds a migration to the Kafka topic its pod consumes.
// Every field defaults to the source pod's ms2m.io/kafka-* annotations.
type MessageQueueConfig struct {
	// Brokers are the Kafka bootstrap addresses (host:port).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	Brokers []BrokerAddress `json:"brokers,omitempty"`

	// Topic is the Kafka topic the pod consumes.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=249
	// +kubebuilder:validation:Pattern=`^[a-zA-Z0-9._-]+$`
	Topic string `json:"topic,omitempty"`

	// ConsumerGroup is the Kafka consumer group the pod's sidecar joins.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[a-zA-Z0-9._-]+$`
	ConsumerGroup string `json:"consumerGroup,omitempty"`
}

// Timeouts bound each phase; a phase that overruns fails the migration,
// which rolls back. Unset fields take the manager's defaults.
type Timeouts struct {
	// CheckpointSeconds bounds pausing the source and checkpointing it.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	CheckpointSeconds *int32 `json:"checkpointSeconds,omitempty"`
	// TransferSeconds bounds building and pushing the checkpoint image.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	TransferSeconds *int32 `json:"transferSeconds,omitempty"`
	// RestoreSeconds bounds scheduling and restoring the target pod.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	RestoreSeconds *int32 `json:"restoreSeconds,omitempty"`
	// FinalizeSeconds bounds fence, handover and removal of the source.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	FinalizeSeconds *int32 `json:"finalizeSeconds,omitempty"`
}

// StatefulMigrationSpec is what the user asks for. It cannot change after
// creation: to retry or change a migration, create a new object.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable: create a new StatefulMigration to retry or change a migration"
type StatefulMigrationSpec struct {
	// SourcePod is the name of the pod to migrate, in this object's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="!format.dns1123Subdomain().validate(self).hasValue()",message="must be a valid pod name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
	SourcePod string `json:"sourcePod"`

	// TargetNode is the node to move the pod to. When empty, the controller
	// picks the best checkpoint-restore-capable node with the scheduler
	// extender's scoring.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="!format.dns1123Subdomain().validate(self).hasValue()",message="must be a valid node name"
	TargetNode string `json:"targetNode,omitempty"`

	// Containers are the app containers to checkpoint. Default: every
	// container of the pod except the injected replay sidecar.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="!self.exists(c, c == 'ms2m-replay')",message="must not list the injected replay sidecar ms2m-replay: it is recreated, not checkpointed"
	Containers []string `json:"containers,omitempty"`

	// CheckpointImageRepository is where the checkpoint image is pushed,
	// without tag or digest (registry.example.com/team/checkpoints).
	// Default: the manager's --checkpoint-image-repository.
	// +optional
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-zA-Z0-9.-]+(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)+$')",message="must be an image repository such as registry.example.com/team/checkpoints, without tag or digest"
	// +kubebuilder:validation:XValidation:rule="self.matches('^(localhost|[^/]*[.:][^/]*)/')",message="must name its registry host (registry.example.com/team/checkpoints, localhost:5000/checkpoints): without one the image, a process's whole memory, would go to Docker Hub"
	CheckpointImageRepository string `json:"checkpointImageRepository,omitempty"`

	// ReplayCutoffSeconds is the threshold of the replay phase: if the
	// target has not caught up within it, the controller cuts over anyway
	// and the remaining lag becomes downtime (bounded by lag/μ). Unset, the
	// manager's --default-replay-cutoff applies (120 s unless changed).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	ReplayCutoffSeconds *int32 `json:"replayCutoffSeconds,omitempty"`

	// DowntimeBudgetMilliseconds: the controller cuts over as soon as the
	// projected time to drain the remaining replay lag fits this budget.
	// +optional
	// +kubebuilder:default=100
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=600000
	DowntimeBudgetMilliseconds *int32 `json:"downtimeBudgetMilliseconds,omitempty"`

	// MessageQueueConfig overrides the Kafka binding read from the pod's
	// ms2m.io/kafka-* annotations.
	// +optional
	MessageQueueConfig *MessageQueueConfig `json:"messageQueueConfig,omitempty"`

	// Strategy says whether the target runs beside the source while it
	// replays (ShadowPod), replaces it (Sequential), or starts where the
	// source stopped for its checkpoint (StopAndCopy).
	// +optional
	// +kubebuilder:default=Auto
	Strategy Strategy `json:"strategy,omitempty"`

	// Timeouts bound each phase.
	// +optional
	Timeouts *Timeouts `json:"timeouts,omitempty"`
}

// PartitionOffset is a Kafka position: the next offset to process in one
// partition of one topic.
type PartitionOffset struct {
	// +required
	Topic string `json:"topic"`
	// +required
	// +kubebuilder:validation:Minimum=0
	Partition int32 `json:"partition"`
	// Offset is the next offset to process (everything below it is applied).
	// +required
	// +kubebuilder:validation:Minimum=0
	Offset int64 `json:"offset"`
}

// ReplayProgress is how far the target has replayed towards the head of the
// topic, sampled by the controller.
type ReplayProgress struct {
	// Replayed counts messages the target has applied since the checkpoint.
	Replayed int64 `json:"replayed"`
	// Lag is the number of messages between the target's position and the
	// source's live position (before the fence) or the fence (after it).
	Lag int64 `json:"lag"`
	// ReplayRatePerSecond is μ, the target's measured replay rate.
	// +optional
	ReplayRatePerSecond int64 `json:"replayRatePerSecond,omitempty"`
	// ArrivalRatePerSecond is λ, the measured rate of new messages.
	// +optional
	ArrivalRatePerSecond int64 `json:"arrivalRatePerSecond,omitempty"`
	// LastSampleTime is when these figures were taken.
	// +optional
	LastSampleTime *metav1.MicroTime `json:"lastSampleTime,omitempty"`
}

// Stalls are the intervals of a migration in which a message that arrived
// would wait: each stops at most the workload's live processing, never a
// message already in flight.
type Stalls struct {
	// CheckpointPause is how long the source's sidecar held deliveries for
	// the checkpoint: from the end of its last delivery before the pause
	// to the resume, by its clock.
	// +optional
	CheckpointPause *metav1.Duration `json:"checkpointPause,omitempty"`
	// Handover is from the source's fence (the end of its sidecar's last
	// delivery before it) to the target live (its sidecar at the fence and, as a group member,
	// joined and reading from it), by the two sidecars' clocks.
	// +optional
	Handover *metav1.Duration `json:"handover,omitempty"`
	// Measured says where the figures come from: Sidecars when every one
	// is from the sidecars' own timestamps; Controller when at least one
	// is the controller's, for a sidecar that reported none (it restarted
	// in between). The controller's figures include its own round trips,
	// so they overstate the stall.
	// +optional
	// +kubebuilder:validation:Enum=Sidecars;Controller
	Measured StallSource `json:"measured,omitempty"`
}

// StallSource is where a migration's stall figures come from.
type StallSource string

const (
	StallsBySidecars   StallSource = "Sidecars"
	StallsByController StallSource = "Controller"
)

// PhaseTransition records when a migration entered a phase.
type PhaseTransition struct {
	// +required
	Phase Phase `json:"phase"`
	// +required
	EnteredTime metav1.MicroTime `json:"enteredTime"`
}

// StatefulMigrationStatus is what the controller observed and did.
type StatefulMigrationStatus struct {
	// ObservedGeneration is the generation the status was computed from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Phase is the current step. Completed and Failed are final.
	// +optional
	Phase Phase `json:"phase,omitempty"`

	// Strategy is the strategy in effect (Auto resolved).
	// +optional
	Strategy Strategy `json:"strategy,omitempty"`

	// SourceUID is the UID of the source pod when the migration began; with
	// the Sequential strategy the pod that replaces it has the same name.
	// +optional
	SourceUID types.UID `json:"sourceUID,omitempty"`

	// SourceNode is the node the source pod ran on when the migration began.
	// +optional
	SourceNode string `json:"sourceNode,omitempty"`
	// TargetNode is the node chosen (or given) for the target pod.
	// +optional
	TargetNode string `json:"targetNode,omitempty"`
	// TargetPod is the name of the restored pod.
	// +optional
	TargetPod string `json:"targetPod,omitempty"`

	// CheckpointID identifies the checkpoint archive(s) of this migration.
	// +optional
	CheckpointID string `json:"checkpointID,omitempty"`
	// CheckpointImage is the pushed checkpoint image, pinned by digest.
	// +optional
	// +kubebuilder:validation:Pattern=`^.+@sha256:[a-f0-9]{64}$`
	CheckpointImage string `json:"checkpointImage,omitempty"`
	// CheckpointSizeBytes is the size of the checkpoint image layer.
	// +optional
	CheckpointSizeBytes int64 `json:"checkpointSizeBytes,omitempty"`

	// CheckpointOffsets are the positions (O) the source's memory was exact
	// to when it was checkpointed; the target replays from them.
	// +optional
	// +listType=atomic
	CheckpointOffsets []PartitionOffset `json:"checkpointOffsets,omitempty"`
	// FenceOffsets are the positions (F) at which the source stopped live
	// processing; the target processes live from exactly them.
	// +optional
	// +listType=atomic
	FenceOffsets []PartitionOffset `json:"fenceOffsets,omitempty"`
	// TargetLiveOffsets are, as the target's sidecar reported them, the
	// positions at which it went live: where its replay ended. Equal to
	// FenceOffsets when the handover lost and repeated nothing.
	// +optional
	// +listType=atomic
	TargetLiveOffsets []PartitionOffset `json:"targetLiveOffsets,omitempty"`

	// Replay is the target's replay progress.
	// +optional
	Replay *ReplayProgress `json:"replay,omitempty"`

	// PhaseTransitions lists when each phase was entered, in order.
	// +optional
	// +listType=atomic
	PhaseTransitions []PhaseTransition `json:"phaseTransitions,omitempty"`

	// FenceTime is when the source's sidecar stopped live processing at
	// the fence, by its own clock: where the handover's stall begins.
	// +optional
	FenceTime *metav1.MicroTime `json:"fenceTime,omitempty"`

	// Stalls are the intervals in which the workload processed no live
	// message, as the sidecars measured them.
	// +optional
	Stalls *Stalls `json:"stalls,omitempty"`

	// Downtime is the sum of the stalls: how long, in all, a message could
	// wait because of the migration.
	// +optional
	Downtime *metav1.Duration `json:"downtime,omitempty"`

	// StartTime is when the controller first acted on the migration.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// CompletionTime is when the migration reached Completed or Failed.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`

	// FailureReason says, for people, why the migration failed. (Why an
	// unfinished one waits is its Ready condition's message.)
	// +optional
	FailureReason string `json:"failureReason,omitempty"`

	// Conditions: see the Condition* constants for types and reasons.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// StatefulMigration moves one stateful, Kafka-driven pod to another node
// with its memory state and without losing or double-processing a message.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=smig;sm,categories=ms2m
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Source Pod",type=string,JSONPath=`.spec.sourcePod`
// +kubebuilder:printcolumn:name="Source Node",type=string,JSONPath=`.status.sourceNode`
// +kubebuilder:printcolumn:name="Target Node",type=string,JSONPath=`.status.targetNode`
// +kubebuilder:printcolumn:name="Downtime",type=string,JSONPath=`.status.downtime`
// +kubebuilder:printcolumn:name="Lag",type=integer,JSONPath=`.status.replay.lag`,priority=1
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.failureReason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type StatefulMigration struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec StatefulMigrationSpec `json:"spec"`
	// +optional
	Status StatefulMigrationStatus `json:"status,omitempty"`
}

// StatefulMigrationList is a list of StatefulMigrations.
// +kubebuilder:object:root=true
type StatefulMigrationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []StatefulMigration `json:"items"`
}
