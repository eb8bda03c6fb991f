package webhooks

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migratable"
	"github.com/ms2m/ms2m/pkg/replay"
)

// PodMutationPath is where the API server sends pod CREATEs.
const PodMutationPath = "/mutate-v1-pod"

// failurePolicy=Fail: a migratable pod is never created without its
// sidecar. The API server calls the webhook only for the pods it acts on
// (Scopes: PodMutationCondition, and no pod in kube-system), so a manager
// that is down refuses those pods' creation, naming pods.ms2m.io, and their
// controllers retry; every other pod in the cluster is created as if ms2m
// were not installed.
//
// +kubebuilder:webhook:path=/mutate-v1-pod,mutating=true,failurePolicy=fail,sideEffects=None,groups="",resources=pods,verbs=create,versions=v1,name=pods.ms2m.io,admissionReviewVersions=v1,timeoutSeconds=5,reinvocationPolicy=IfNeeded

// SidecarOptions configure the injected replay sidecar.
type SidecarOptions struct {
	// Image runs the sidecar; the binary is ms2m-replay.
	Image string
	// Command is the sidecar's entrypoint in Image.
	Command []string
	// ControlPort serves the controller's control API and /readyz.
	ControlPort int32
	// MetricsPort serves Prometheus metrics.
	MetricsPort int32
	// Resources of the sidecar container.
	Resources corev1.ResourceRequirements
	// AllowedUsers may call the sidecar's control API (the manager's
	// service account); empty: the sidecar's default,
	// system:serviceaccount:ms2m-system:ms2m-manager.
	AllowedUsers []string
	// NodeAgents may pause and resume the sidecar from a pod on its node
	// (the node agent, for the checkpoint); empty: the sidecar's default,
	// system:serviceaccount:ms2m-system:ms2m-agent.
	NodeAgents []string
}

// DefaultSidecarOptions are the manager's defaults.
func DefaultSidecarOptions() SidecarOptions {
	return SidecarOptions{
		Image:       "ghcr.io/ms2m/ms2m:v0.1.0",
		Command:     []string{"/ms2m/ms2m-replay"},
		ControlPort: 9901,
		MetricsPort: 9902,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("20m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
	}
}

// PodMutator injects the replay sidecar and the checkpoint-restore
// annotation into pods annotated ms2m.io/migratable: "true", and refuses
// migratable pods whose Kafka binding is incomplete or invalid.
type PodMutator struct {
	Sidecar SidecarOptions
	// Migrations finds the Sequential migration whose StatefulSet pod is
	// being recreated, so that pod is admitted as the restored one (nil:
	// no restores).
	Migrations client.Reader
	decoder    admission.Decoder
}

// NewPodMutator returns the handler for PodMutationPath.
func NewPodMutator(decoder admission.Decoder, sidecar SidecarOptions) *PodMutator {
	return &PodMutator{Sidecar: sidecar, decoder: decoder}
}

// Handle implements admission.Handler.
func (m *PodMutator) Handle(ctx context.Context, req admission.Request) admission.Response {
	pod := &corev1.Pod{}
	if err := m.decoder.Decode(req, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	// The API server's match condition keeps other pods away; a pod that
	// gets here anyway (a configuration without it) is let through
	// untouched, as the condition would have.
	if !NeedsMutation(pod) {
		return admission.Allowed("")
	}
	before := podParts{containers: slices.Clone(pod.Spec.Containers), annotations: maps.Clone(pod.Annotations)}
	if errs := Mutate(pod, m.Sidecar); len(errs) > 0 {
		return admission.Denied("ms2m: " + errs.ToAggregate().Error())
	}
	restored, err := migratable.RestoreStatefulSetPodFrom(ctx, m.Migrations, req.Namespace, pod)
	if err != nil {
		// Refused, so the StatefulSet tries again, rather than start the
		// pod without the state it is being migrated with.
		return admission.Errored(http.StatusServiceUnavailable, err)
	}
	if restored {
		// Rare, and it changes more than podPatch covers (labels,
		// affinity, images): the general JSON diff.
		raw, err := json.Marshal(pod)
		if err != nil {
			return admission.Errored(http.StatusInternalServerError, err)
		}
		return admission.PatchResponseFromRaw(req.Object.Raw, raw)
	}
	return admission.Patched("", podPatch(before, pod)...)
}

// podParts are what Mutate may change in a pod.
type podParts struct {
	containers  []corev1.Container
	annotations map[string]string
}

// podPatch is the JSON patch from before to the mutated pod, written
// directly rather than by diffing the two pods' JSON (which cost over half
// of an admission): Mutate changes only annotations and the containers it
// appends or replaces. A pod that Mutate left as it was gets no patch.
func podPatch(before podParts, pod *corev1.Pod) []jsonpatch.JsonPatchOperation {
	var ops []jsonpatch.JsonPatchOperation
	for i, c := range pod.Spec.Containers {
		switch {
		case i >= len(before.containers):
			ops = append(ops, jsonpatch.NewOperation("add", "/spec/containers/-", c))
		case !equality.Semantic.DeepEqual(before.containers[i], c):
			ops = append(ops, jsonpatch.NewOperation("replace", "/spec/containers/"+strconv.Itoa(i), c))
		}
	}
	keys := slices.Sorted(maps.Keys(pod.Annotations))
	for _, k := range keys {
		if v, ok := before.annotations[k]; !ok || v != pod.Annotations[k] {
			// "add" on an existing member replaces it (RFC 6902).
			ops = append(ops, jsonpatch.NewOperation("add", "/metadata/annotations/"+escapePointer(k), pod.Annotations[k]))
		}
	}
	return ops
}

// escapePointer escapes a JSON Pointer reference token (RFC 6901).
func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// Mutate prepares a migratable pod in place; others are left untouched. It is
// idempotent: mutating a mutated pod changes nothing.
func Mutate(pod *corev1.Pod, opts SidecarOptions) field.ErrorList {
	opted, ferr := migratable.IsMigratable(pod.Annotations)
	if ferr != nil {
		return field.ErrorList{ferr}
	}
	if !opted {
		return nil
	}
	binding, errs := migratable.ParseBinding(pod.Annotations)
	if len(errs) > 0 {
		return errs
	}
	sidecar := sidecarContainer(binding, opts)
	replaced := false
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == v1.SidecarContainerName {
			// A migration's target pod carries the offsets its sidecar
			// replays from (or starts it in standby) and its source's
			// group.instance.id as a value, so that it takes the source's
			// place in the consumer group instead of joining as a new
			// member (which rebalances every replica); re-injection keeps
			// them.
			for _, e := range pod.Spec.Containers[i].Env {
				switch {
				case e.Name == replay.EnvReplayFrom || e.Name == replay.EnvStandby:
					sidecar.Env = append(sidecar.Env, e)
				case e.Name == replay.EnvGroupInstanceID && e.ValueFrom == nil && e.Value != "":
					for j := range sidecar.Env {
						if sidecar.Env[j].Name == replay.EnvGroupInstanceID {
							sidecar.Env[j] = e
						}
					}
				}
			}
			pod.Spec.Containers[i] = sidecar
			replaced = true
		}
	}
	if !replaced {
		pod.Spec.Containers = append(pod.Spec.Containers, sidecar)
	}
	pod.Annotations[v1.AnnotationCheckpointRestore] = "enabled"
	pod.Annotations[v1.AnnotationSidecarImage] = opts.Image
	return nil
}

func sidecarContainer(b migratable.Binding, opts SidecarOptions) corev1.Container {
	fieldEnv := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	env := []corev1.EnvVar{
		{Name: replay.EnvBrokers, Value: strings.Join(b.Brokers, ",")},
		{Name: replay.EnvTopic, Value: b.Topic},
		{Name: replay.EnvGroup, Value: b.Group},
		{Name: replay.EnvAppPort, Value: strconv.Itoa(int(b.AppPort))},
		{Name: replay.EnvDeliveryPath, Value: b.DeliveryPath},
		{Name: replay.EnvControlPort, Value: strconv.Itoa(int(opts.ControlPort))},
		{Name: replay.EnvMetricsPort, Value: strconv.Itoa(int(opts.MetricsPort))},
	}
	if b.BatchSize > 0 {
		env = append(env, corev1.EnvVar{Name: replay.EnvAppBatchSize, Value: strconv.Itoa(b.BatchSize)})
	}
	if b.MaxAttempts > 0 {
		env = append(env, corev1.EnvVar{Name: replay.EnvMaxAttempts, Value: strconv.Itoa(b.MaxAttempts)})
	}
	if b.DeadLetterTopic != "" {
		env = append(env, corev1.EnvVar{Name: replay.EnvDeadLetterTopic, Value: b.DeadLetterTopic})
	}
	if b.QuiescePath != "" {
		env = append(env, corev1.EnvVar{Name: replay.EnvAppQuiescePath, Value: b.QuiescePath})
	}
	if len(opts.AllowedUsers) > 0 {
		env = append(env, corev1.EnvVar{Name: replay.EnvAllowedUsers, Value: strings.Join(opts.AllowedUsers, ",")})
	}
	if len(opts.NodeAgents) > 0 {
		env = append(env, corev1.EnvVar{Name: replay.EnvNodeAgents, Value: strings.Join(opts.NodeAgents, ",")})
	}
	resources := sidecarResources(opts.Resources)
	if _, ok := resources.Limits[corev1.ResourceMemory]; ok {
		env = append(env, corev1.EnvVar{Name: replay.EnvMemoryLimit, ValueFrom: &corev1.EnvVarSource{
			ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: v1.SidecarContainerName, Resource: "limits.memory"}}})
	}
	env = append(env,
		fieldEnv(replay.EnvPodIP, "status.podIP"),
		fieldEnv(replay.EnvNodeName, "spec.nodeName"),
		fieldEnv("POD_NAME", "metadata.name"),
		fieldEnv(replay.EnvGroupInstanceID, "metadata.name"),
		fieldEnv(replay.EnvPodNamespace, "metadata.namespace"),
		fieldEnv(replay.EnvPodUID, "metadata.uid"),
		migratable.ModeEnv(),
	)
	return corev1.Container{
		Name:    v1.SidecarContainerName,
		Image:   opts.Image,
		Command: opts.Command,
		Env:     env,
		Ports: []corev1.ContainerPort{
			{Name: "ms2m-control", ContainerPort: opts.ControlPort, Protocol: corev1.ProtocolTCP},
			{Name: "ms2m-metrics", ContainerPort: opts.MetricsPort, Protocol: corev1.ProtocolTCP},
		},
		// Ready only while the sidecar consumes live: a restored target
		// stays unready until the handover at the fence.
		ReadinessProbe: &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/readyz", Port: intstr.FromString("ms2m-control"),
			}},
			PeriodSeconds: 1, FailureThreshold: 1,
		},
		Resources:                resources,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}
}

// sidecarResources adds one ms2m.io/checkpoint-restore to the sidecar's
// requests and limits (extended resources need both, equal). It marks the
// pod for the kube-scheduler: the extender's managedResources lists the
// resource, so the scheduler sends this pod, and only pods like it, to the
// ms2m extender; ignoredByScheduler keeps the scheduler from looking for it
// in node allocatable, and the kubelet drops extended resources its node
// does not advertise before admission. See docs/scheduler.md.
func sidecarResources(r corev1.ResourceRequirements) corev1.ResourceRequirements {
	out := *r.DeepCopy()
	one := resource.MustParse("1")
	if out.Requests == nil {
		out.Requests = corev1.ResourceList{}
	}
	if out.Limits == nil {
		out.Limits = corev1.ResourceList{}
	}
	out.Requests[v1.ResourceCheckpointRestore] = one
	out.Limits[v1.ResourceCheckpointRestore] = one
	return out
}

func ptrTo[T any](v T) *T { return &v }
