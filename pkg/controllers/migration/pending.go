package migration

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migratable"
	"github.com/ms2m/ms2m/scheduler"
)

// pending validates the migration against the cluster, chooses the target
// and waits for capacity. Each refusal fails the migration with a reason
// and leaves the source untouched.
func pending(ctx context.Context, w *work) (outcome, error) {
	m := w.m
	src, err := w.sourcePod(ctx)
	if apierrors.IsNotFound(err) {
		return fail(v1.ReasonSourcePodNotFound, "pod %s/%s does not exist", m.Namespace, m.Spec.SourcePod)
	}
	if err != nil {
		return outcome{}, err
	}
	if o, bad := validateSource(src, m); bad {
		return o, nil
	}
	binding, errs := migratable.Resolve(m, src)
	if len(errs) > 0 {
		return fail(v1.ReasonInvalidKafkaBinding, "source pod's Kafka binding: %s", errs.ToAggregate())
	}
	if err := reachable(ctx, binding.Brokers); err != nil {
		return fail(v1.ReasonBrokerUnreachable, "%v", err)
	}
	if other, err := w.otherActive(ctx); err != nil {
		return outcome{}, err
	} else if other != "" {
		return fail(v1.ReasonAlreadyMigrating, "pod %s is already being migrated by StatefulMigration %s", src.Name, other)
	}

	m.Status.SourceNode, m.Status.SourceUID = src.Spec.NodeName, src.UID
	m.Status.Strategy = strategyFor(m.Spec.Strategy, src)
	if ref := metav1.GetControllerOf(src); m.Status.Strategy == v1.StrategySequential && (ref == nil || ref.Kind != "StatefulSet") {
		return fail(v1.ReasonSourceNotMigratable, "strategy Sequential keeps the pod's name and identity, which only a StatefulSet recreates; "+
			"pod %s is not a StatefulSet's: use ShadowPod (or Auto)", src.Name)
	}
	if ref := metav1.GetControllerOf(src); m.Status.Strategy != v1.StrategySequential && ref != nil && ref.Kind == "StatefulSet" {
		return fail(v1.ReasonSourceNotMigratable, "pod %s belongs to StatefulSet %s, which allows one pod per identity: strategy %s runs the target beside it; use Sequential (or Auto)",
			src.Name, ref.Name, m.Status.Strategy)
	}
	target, o, bad, err := w.chooseTarget(ctx, src)
	if err != nil || bad {
		return o, err
	}
	m.Status.TargetNode = target
	// Once per migration, not on every reconcile while it waits for
	// capacity (a drain holds many).
	if !meta.IsStatusConditionTrue(m.Status.Conditions, v1.ConditionValidated) {
		if o, refused, err := w.targetAdmitted(ctx, src); err != nil || refused {
			return o, err
		}
	}
	setCondition(&m.Status, m.Generation, v1.ConditionValidated, true, v1.ReasonSucceeded,
		fmt.Sprintf("source %s on %s, target node %s, strategy %s", src.Name, src.Spec.NodeName, target, m.Status.Strategy))

	if held, msg, err := w.overLimits(ctx); err != nil {
		return outcome{}, err
	} else if held {
		// Held, not failed: the Ready condition says why (FailureReason is
		// for failures only).
		setCondition(&m.Status, m.Generation, v1.ConditionReady, false, v1.ReasonWaitingForCapacity, msg)
		return after(2 * time.Second)
	}
	setCondition(&m.Status, m.Generation, v1.ConditionReady, false, v1.ReasonInProgress, "migrating")
	return w.next(fmt.Sprintf("pausing %s to checkpoint it, then restoring on %s", src.Name, target)), nil
}

func validateSource(src *corev1.Pod, m *v1.StatefulMigration) (outcome, bool) {
	if src.DeletionTimestamp != nil || src.Status.Phase != corev1.PodRunning || !podReady(src) {
		o, _ := fail(v1.ReasonSourcePodNotRunning, "pod %s is %s and not Ready: only a serving pod can be migrated", src.Name, src.Status.Phase)
		return o, true
	}
	if src.Annotations[v1.AnnotationCheckpointRestore] != "enabled" || migratable.Sidecar(src) == nil {
		o, _ := fail(v1.ReasonSourceNotMigratable, "pod %s has no %s sidecar (annotation %s=enabled): annotate it %s: \"true\" and recreate it so the webhook prepares it",
			src.Name, v1.SidecarContainerName, v1.AnnotationCheckpointRestore, v1.AnnotationMigratable)
		return o, true
	}
	ctrs := migratable.AppContainers(m, src)
	for _, c := range ctrs {
		if !slices.ContainsFunc(src.Spec.Containers, func(x corev1.Container) bool { return x.Name == c }) || c == v1.SidecarContainerName {
			o, _ := fail(v1.ReasonSourceNotMigratable, "spec.containers: pod %s has no app container %q", src.Name, c)
			return o, true
		}
	}
	if len(ctrs) != 1 {
		o, _ := fail(v1.ReasonSourceNotMigratable, "pod %s has %d app containers (%s); this version migrates exactly one: name it in spec.containers",
			src.Name, len(ctrs), strings.Join(ctrs, ", "))
		return o, true
	}
	return outcome{}, false
}

// reachable checks that at least one broker accepts a connection.
func reachable(ctx context.Context, brokers []string) error {
	var errs []string
	for _, b := range brokers {
		d := net.Dialer{Timeout: 2 * time.Second}
		c, err := d.DialContext(ctx, "tcp", b)
		if err == nil {
			_ = c.Close()
			return nil
		}
		errs = append(errs, err.Error())
	}
	return fmt.Errorf("no Kafka broker reachable (%s): the target could not replay", strings.Join(errs, "; "))
}

// otherActive names another unfinished migration of the same pod created
// before this one.
func (w *work) otherActive(ctx context.Context) (string, error) {
	var list v1.StatefulMigrationList
	if err := w.r.Client.List(ctx, &list, client.InNamespace(w.m.Namespace), client.MatchingFields{indexSourcePod: w.m.Spec.SourcePod}); err != nil {
		return "", err
	}
	for _, o := range list.Items {
		if o.UID == w.m.UID || o.Status.Phase.IsTerminal() {
			continue
		}
		if o.Status.Phase != v1.PhasePending && o.Status.Phase != "" || o.CreationTimestamp.Before(&w.m.CreationTimestamp) ||
			(o.CreationTimestamp.Equal(&w.m.CreationTimestamp) && o.Name < w.m.Name) {
			return o.Name, nil
		}
	}
	return "", nil
}

func strategyFor(s v1.Strategy, pod *corev1.Pod) v1.Strategy {
	if s != "" && s != v1.StrategyAuto {
		return s
	}
	if ref := metav1.GetControllerOf(pod); ref != nil && ref.Kind == "StatefulSet" {
		return v1.StrategySequential
	}
	return v1.StrategyShadowPod
}

// chooseTarget checks the given target node, or ranks every node with the
// scheduler extender's own checks and scoring.
func (w *work) chooseTarget(ctx context.Context, src *corev1.Pod) (string, outcome, bool, error) {
	if w.m.Status.TargetNode != "" {
		return w.m.Status.TargetNode, outcome{}, false, nil
	}
	probe := migratable.TargetPodSkeleton(w.m, src)
	var nodes corev1.NodeList
	if err := w.r.Client.List(ctx, &nodes); err != nil {
		return "", outcome{}, false, err
	}
	if want := w.m.Spec.TargetNode; want != "" {
		if want == src.Spec.NodeName {
			o, _ := fail(v1.ReasonTargetIsSource, "spec.targetNode %s is the node the pod runs on", want)
			return "", o, true, nil
		}
		if !slices.ContainsFunc(nodes.Items, func(n corev1.Node) bool { return n.Name == want }) {
			o, _ := fail(v1.ReasonTargetNodeNotFound, "spec.targetNode %s does not exist", want)
			return "", o, true, nil
		}
		r := scheduler.RankNodes(probe, []string{want}, w.r.Nodes, scheduler.DefaultChecks(), scheduler.DefaultScorer())
		if v, refused := r.Refused[want]; refused {
			o, _ := fail(targetReason(v.Reason), "spec.targetNode %s: %s", want, v.Message)
			return "", o, true, nil
		}
		return want, outcome{}, false, nil
	}
	names := make([]string, 0, len(nodes.Items))
	for _, n := range nodes.Items {
		names = append(names, n.Name)
	}
	r := scheduler.RankNodes(probe, names, w.r.Nodes, scheduler.DefaultChecks(), scheduler.DefaultScorer())
	if len(r.Fit) == 0 {
		var why []string
		for _, n := range names {
			why = append(why, fmt.Sprintf("%s: %s", n, r.Refused[n].Message))
		}
		slices.Sort(why)
		o, _ := fail(v1.ReasonNoEligibleTarget, "no node can take the pod: %s", strings.Join(why, "; "))
		return "", o, true, nil
	}
	return r.Fit[0].Node, outcome{}, false, nil
}

// targetReason maps the extender's refusal of a named target node to the
// API's reason.
func targetReason(extender string) string {
	switch extender {
	case scheduler.ReasonCheckpointRestoreUnsupported, scheduler.ReasonPlatformMismatch, scheduler.ReasonKernelTooOld:
		// The node cannot restore this checkpoint: no restore support, or
		// one CRIU cannot restore onto (another platform, an older kernel).
		return v1.ReasonTargetCannotRestore
	case scheduler.ReasonNodeNotReady:
		return v1.ReasonTargetNodeNotReady
	case scheduler.ReasonNodeUnschedulable, scheduler.ReasonUntoleratedTaint, scheduler.ReasonVolumeNodeAffinity:
		return v1.ReasonTargetUnschedulable
	case scheduler.ReasonSourceNode:
		return v1.ReasonTargetIsSource
	case scheduler.ReasonUnknownNode:
		return v1.ReasonTargetNodeNotFound
	}
	return v1.ReasonNoEligibleTarget
}

// overLimits holds the migration in Pending while the cluster, the source
// node or the namespace already runs as many migrations as allowed.
func (w *work) overLimits(ctx context.Context) (bool, string, error) {
	var list v1.StatefulMigrationList
	if err := w.r.Client.List(ctx, &list); err != nil {
		return false, "", err
	}
	return w.r.admissions.admit(w.m, list.Items, w.r.Opts)
}

// admissions remembers the migrations this manager let out of Pending
// until its cache shows them running: reconciles run side by side, and
// two of them reading the same cache would otherwise both take the last
// slot.
type admissions struct {
	mu sync.Mutex
	m  map[types.UID]admitted
}

type admitted struct{ namespace, sourceNode string }

// admit counts the running migrations (the cache's, and those admitted
// here that it does not show yet) other than m and, when m fits every
// limit, records it as admitted.
func (a *admissions) admit(m *v1.StatefulMigration, cached []v1.StatefulMigration, o Options) (bool, string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = map[types.UID]admitted{}
	}
	running := map[types.UID]admitted{}
	pending := map[types.UID]bool{}
	for _, c := range cached {
		switch c.Status.Phase {
		case "", v1.PhasePending:
			pending[c.UID] = true
		case v1.PhaseCompleted, v1.PhaseFailed:
		default:
			running[c.UID] = admitted{namespace: c.Namespace, sourceNode: c.Status.SourceNode}
		}
	}
	for uid, ad := range a.m {
		if !pending[uid] { // running in the cache by now, finished, or gone
			delete(a.m, uid)
			continue
		}
		running[uid] = ad
	}
	delete(running, m.UID)
	active, outbound, inNamespace := len(running), 0, 0
	for _, r := range running {
		if r.sourceNode == m.Status.SourceNode {
			outbound++
		}
		if r.namespace == m.Namespace {
			inNamespace++
		}
	}
	perNamespace := o.MaxParallelPerNamespace
	if perNamespace <= 0 {
		perNamespace = max(1, o.MaxParallel-1)
	}
	switch {
	case active >= o.MaxParallel:
		return true, fmt.Sprintf("waiting: %d migrations running in the cluster (--max-parallel-migrations=%d)", active, o.MaxParallel), nil
	case outbound >= o.MaxOutboundPerNode:
		return true, fmt.Sprintf("waiting: %d migrations leaving node %s (--max-outbound-migrations-per-node=%d)",
			outbound, m.Status.SourceNode, o.MaxOutboundPerNode), nil
	case inNamespace >= perNamespace:
		return true, fmt.Sprintf("waiting: %d migrations running in namespace %s (--max-parallel-migrations-per-namespace=%d)",
			inNamespace, m.Namespace, perNamespace), nil
	}
	a.m[m.UID] = admitted{namespace: m.Namespace, sourceNode: m.Status.SourceNode}
	return false, "", nil
}

// targetAdmitted asks the API server whether it would admit the target pod
// (a server-side dry run of its creation: admission policies such as the
// chart's, Pod Security, quotas, webhooks), so that a target it refuses
// fails the migration here, before the source is paused and checkpointed,
// rather than in Restoring. The dry run's pod has the checkpoint image and
// offsets still to come as placeholders. Sequential's target is created
// by its StatefulSet, not by the manager, and is not asked about.
func (w *work) targetAdmitted(ctx context.Context, src *corev1.Pod) (outcome, bool, error) {
	if w.m.Status.Strategy == v1.StrategySequential {
		return outcome{}, false, nil
	}
	probe := w.m.DeepCopy()
	repo := probe.Spec.CheckpointImageRepository
	if repo == "" {
		repo = w.r.Opts.DefaultRepository
	}
	if repo == "" {
		repo = "checkpoints.invalid/ms2m"
	}
	probe.Status.CheckpointImage = repo + "@sha256:" + strings.Repeat("0", 64)
	if len(probe.Status.CheckpointOffsets) == 0 {
		probe.Status.CheckpointOffsets = []v1.PartitionOffset{{Topic: "dry-run", Partition: 0, Offset: 0}}
	}
	pod, err := w.buildTarget(ctx, probe, src)
	if err != nil {
		return outcome{}, false, err
	}
	err = w.r.Client.Create(ctx, pod, client.DryRunAll)
	switch {
	case err == nil, apierrors.IsAlreadyExists(err):
		return outcome{}, false, nil
	case apierrors.IsForbidden(err), apierrors.IsInvalid(err):
		o, _ := fail(v1.ReasonTargetPodRefused, "the API server would not admit the target pod (a dry run of its creation, before anything was paused): %v", err)
		return o, true, nil
	default:
		return outcome{}, false, fmt.Errorf("dry run of the target pod's creation: %w", err)
	}
}
