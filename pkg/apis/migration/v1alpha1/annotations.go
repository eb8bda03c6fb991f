package v1alpha1

import (
	"encoding/json"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Well-known annotations and labels: the contract between workloads, the
// webhook, the controller, the agent and the scheduler extender.
const (
	// AnnotationMigratable opts a pod (template) in: "true" makes the webhook
	// inject the replay sidecar and lets ms2m migrate the pod.
	AnnotationMigratable = "ms2m.io/migratable"
	// AnnotationKafkaBrokers is a comma-separated list of host:port.
	AnnotationKafkaBrokers = "ms2m.io/kafka-brokers"
	// AnnotationKafkaTopic is the topic the app consumes.
	AnnotationKafkaTopic = "ms2m.io/kafka-topic"
	// AnnotationKafkaGroup is the consumer group of the app's sidecar.
	AnnotationKafkaGroup = "ms2m.io/kafka-group"
	// AnnotationAppPort is the app's HTTP port the sidecar delivers to.
	AnnotationAppPort = "ms2m.io/app-port"
	// AnnotationDeliveryPath is the HTTP path messages are POSTed to
	// (default /messages).
	AnnotationDeliveryPath = "ms2m.io/delivery-path"
	// AnnotationAppBatchSize, above 1, is the app's opt-in to batches: the
	// sidecar POSTs up to that many messages at once (1-1000, default 1).
	AnnotationAppBatchSize = "ms2m.io/app-batch-size"
	// AnnotationMaxDeliveryAttempts is how many times the sidecar delivers
	// a message the app refuses (any answer but 2xx, 409 with a next
	// offset, 429 and 502-504) before it writes it to the dead-letter topic
	// and goes on (1-100, default 5).
	AnnotationMaxDeliveryAttempts = "ms2m.io/max-delivery-attempts"
	// AnnotationDeadLetterTopic is where those messages go (default
	// <topic>.ms2m-dead-letter).
	AnnotationDeadLetterTopic = "ms2m.io/dead-letter-topic"
	// AnnotationAppQuiescePath is the app's opt-in to be told before its
	// container is checkpointed: once deliveries are paused the sidecar
	// POSTs to this path, and the app closes the TCP connections it holds
	// (CRIU refuses to checkpoint a connected socket) before it answers
	// 2xx. Without it the sidecar only closes its own connections.
	AnnotationAppQuiescePath = "ms2m.io/app-quiesce-path"

	// AnnotationCheckpointRestore is set to "enabled" by the webhook on the
	// pods it prepared (sidecar injected); the controller migrates only those.
	AnnotationCheckpointRestore = "ms2m.io/checkpoint-restore"
	// AnnotationSidecarImage records the sidecar image the webhook injected.
	AnnotationSidecarImage = "ms2m.io/sidecar-image"

	// LabelCheckpointRestore is set by the agent on nodes whose runtime can
	// restore a checkpoint ("true").
	LabelCheckpointRestore = "ms2m.io/checkpoint-restore"
	// LabelRuntime and LabelRuntimeVersion name the node's container runtime.
	LabelRuntime        = "ms2m.io/runtime"
	LabelRuntimeVersion = "ms2m.io/runtime-version"
	// LabelCRIUVersion is the CRIU version found on the node.
	LabelCRIUVersion = "ms2m.io/criu-version"
	// LabelCRIUConnectedTCP is what the node's CRIU configuration does with
	// a connected TCP socket at a checkpoint: "tcp-close" (dumped, restored
	// closed) or "tcp-established" (dumped; its restore needs the old
	// address, so it fails in a new pod). Absent: CRIU refuses the
	// checkpoint, as it does by default.
	LabelCRIUConnectedTCP = "ms2m.io/criu-connected-tcp"

	// AnnotationSourceNode is set by the controller on a migration's target
	// pod: the node the checkpoint was taken on. The scheduler extender
	// refuses that node and compares every candidate with it (architecture,
	// OS, kernel, zone). Pods without it skip the source-related checks.
	AnnotationSourceNode = "migration.ms2m.io/source-node"
	// AnnotationMigrationName names, on a target pod, the StatefulMigration
	// (same namespace) that created it, so the extender does not count that
	// migration against the node it is already heading to.
	AnnotationMigrationName = "migration.ms2m.io/migration"
	// AnnotationSidecarMode is the controller's record, on a pod, of where
	// its sidecar must stand after a restart; the sidecar reads it through
	// the downward API (MS2M_MODE), which the kubelet resolves again at each
	// container start. SidecarModeFenced on a migration's source from just
	// before the fence until a rollback resumes it (a restarted sidecar must
	// not rejoin the group); SidecarModeLive on a restored pod once it was
	// handed over (a restarted sidecar consumes live from the committed
	// offsets instead of waiting, replaying, for a handover that was done).
	AnnotationSidecarMode = "migration.ms2m.io/sidecar-mode"
	SidecarModeFenced     = "fenced"
	SidecarModeLive       = "live"
	// AnnotationBaseImages lists, comma-separated, the images the
	// checkpointed containers were started from. A node that already holds
	// them restores without pulling the root filesystem, and the extender
	// scores it higher. The controller sets it on a restored pod, whose
	// base-image init container pulls it onto the node (its app image is a
	// checkpoint image, so a later migration reads the base image here).
	AnnotationBaseImages = "migration.ms2m.io/base-images"

	// ResourceCheckpointRestore is the extended resource the webhook requests
	// (1) on the injected sidecar. No node advertises it: it only marks the
	// pod for the kube-scheduler, whose extender configuration lists it in
	// managedResources with ignoredByScheduler: true, so that only pods that
	// concern ms2m are sent to the extender. The kubelet admits such a pod
	// because it drops extended resources its node does not advertise
	// before its resource fit check.
	ResourceCheckpointRestore = "ms2m.io/checkpoint-restore"

	// LabelMigration is set on a migration's target pod (the migration's
	// name) while it is restored and replaying, so the controller finds it.
	LabelMigration = "migration.ms2m.io/migration"

	// AnnotationAgentCheckpoint and AnnotationAgentImage carry the node
	// agent's results on a StatefulMigration (JSON AgentResult): the
	// archive the kubelet wrote, then the pushed image. The agent writes
	// only these; the controller alone writes status.
	AnnotationAgentCheckpoint = "agent.migration.ms2m.io/checkpoint"
	AnnotationAgentImage      = "agent.migration.ms2m.io/image"

	// FinalizerRollback holds a StatefulMigration until an unfinished
	// migration is rolled back (source serving, target removed).
	FinalizerRollback = "migration.ms2m.io/rollback"

	// AnnotationCheckpointImage names, on a restored pod, the checkpoint
	// image (by digest) its app container was restored from, and
	// FinalizerCheckpointImage holds the pod's deletion until the manager
	// has deleted that image from its registry (or kept it, as its
	// --checkpoint-image-retention says): a checkpoint image holds a
	// process's whole memory, and is needed exactly as long as a pod runs
	// from it (a container that restarts is created from it again). The
	// manager deletes only an image a migration in the pod's namespace
	// recorded in status, or, once that migration is gone, one in its
	// default checkpoint repository, and never one another pod still runs
	// from.
	AnnotationCheckpointImage = "migration.ms2m.io/checkpoint-image"
	FinalizerCheckpointImage  = "migration.ms2m.io/checkpoint-image"

	// LabelTrigger on a StatefulMigration says who started it: "user" or
	// "evacuation".
	LabelTrigger = "migration.ms2m.io/trigger"

	// SidecarContainerName is the name of the injected replay sidecar. It is
	// never checkpointed.
	SidecarContainerName = "ms2m-replay"
)

// AgentResult is what the node agent reports in AnnotationAgentCheckpoint
// and AnnotationAgentImage: a result or an error, never both.
type AgentResult struct {
	// Archive is the checkpoint archive on the source node.
	Archive string `json:"archive,omitempty"`
	// Image is the pushed checkpoint image, by digest.
	Image string `json:"image,omitempty"`
	// SizeBytes is the image layer's size.
	SizeBytes int64 `json:"sizeBytes,omitempty"`
	// Error says why the step failed.
	Error string `json:"error,omitempty"`
	// Node is the agent's node.
	Node string `json:"node,omitempty"`

	// Of a checkpoint: the agent paused the source's sidecar, checkpointed
	// and resumed it. Offsets is O as the paused sidecar answered it
	// (partition → offset), Assigned the partitions it holds as a static
	// member of its group (absent for a dynamic member), PausedAt and
	// ResumedAt the pause by the sidecar's clock.
	Offsets   map[int]int64     `json:"offsets,omitempty"`
	Assigned  []int             `json:"assigned,omitempty"`
	PausedAt  *metav1.MicroTime `json:"pausedAt,omitempty"`
	ResumedAt *metav1.MicroTime `json:"resumedAt,omitempty"`
	// Steps is where the pause went, by the agent's clock.
	Steps *CheckpointSteps `json:"steps,omitempty"`
}

// AgentResultOf reads the node agent's report in m's annotation key
// (AnnotationAgentCheckpoint or AnnotationAgentImage); nil when there is
// none yet.
func AgentResultOf(m *StatefulMigration, key string) (*AgentResult, error) {
	raw, ok := m.Annotations[key]
	if !ok {
		return nil, nil
	}
	var r AgentResult
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return nil, fmt.Errorf("annotation %s: %w", key, err)
	}
	return &r, nil
}

// CheckpointSteps time the calls the node agent makes while the source is
// paused: what the checkpoint pause is made of.
type CheckpointSteps struct {
	// Pause is the /pause call: the sidecar stopping its deliveries and
	// reading O from the broker.
	Pause metav1.Duration `json:"pause"`
	// Of the pause call, as the sidecar timed its parts: waiting for the
	// delivery in flight, reading the group's committed offsets, and
	// quiescing the app's connections.
	SidecarIdle    *metav1.Duration `json:"sidecarIdle,omitempty"`
	SidecarOffsets *metav1.Duration `json:"sidecarOffsets,omitempty"`
	SidecarQuiesce *metav1.Duration `json:"sidecarQuiesce,omitempty"`
	// Checkpoint is the kubelet's checkpoint API (the runtime's dump),
	// every attempt included.
	Checkpoint metav1.Duration `json:"checkpoint"`
	// Attempts of the checkpoint: more than one when CRIU refused a
	// connected TCP socket and the agent tried again.
	Attempts int `json:"attempts,omitempty"`
	// Resume is the /resume call.
	Resume metav1.Duration `json:"resume"`
	// ResumedAtThaw: the agent resumed the sidecar when the runtime let
	// the container run again (its cgroup thawed after the dump), before
	// the kubelet answered; Frozen is how long the container was held
	// (the runtime's pause to its resume, as the cgroup showed it), and
	// KubeletAfterThaw how much later the kubelet answered (containerd
	// writes the archive after the resume). NoThaw says why the sidecar
	// was resumed only when the kubelet answered.
	ResumedAtThaw    bool             `json:"resumedAtThaw,omitempty"`
	Frozen           *metav1.Duration `json:"frozen,omitempty"`
	KubeletAfterThaw *metav1.Duration `json:"kubeletAfterThaw,omitempty"`
	NoThaw           string           `json:"noThaw,omitempty"`
}

// String reads "pause call 3ms (in-flight delivery 1ms, offsets 0s,
// quiesce 1ms), kubelet checkpoint 25ms (2 attempts), resume call 2ms
// (container frozen 9ms; resumed at its thaw, 14ms before the kubelet
// answered)".
func (s *CheckpointSteps) String() string {
	if s == nil {
		return ""
	}
	tries := ""
	if s.Attempts > 1 {
		tries = fmt.Sprintf(" (%d attempts)", s.Attempts)
	}
	parts := ""
	if s.SidecarIdle != nil && s.SidecarOffsets != nil && s.SidecarQuiesce != nil {
		parts = fmt.Sprintf(" (in-flight delivery %s, offsets %s, quiesce %s)",
			FormatDuration(s.SidecarIdle.Duration), FormatDuration(s.SidecarOffsets.Duration), FormatDuration(s.SidecarQuiesce.Duration))
	}
	resume := ""
	switch {
	case s.ResumedAtThaw && s.Frozen != nil && s.KubeletAfterThaw != nil:
		resume = fmt.Sprintf(" (container frozen %s; resumed at its thaw, %s before the kubelet answered)",
			FormatDuration(s.Frozen.Duration), FormatDuration(s.KubeletAfterThaw.Duration))
	case s.NoThaw != "":
		resume = fmt.Sprintf(" (after the kubelet's answer: %s)", s.NoThaw)
	}
	return fmt.Sprintf("pause call %s%s, kubelet checkpoint %s%s, resume call %s%s",
		FormatDuration(s.Pause.Duration), parts, FormatDuration(s.Checkpoint.Duration), tries, FormatDuration(s.Resume.Duration), resume)
}
