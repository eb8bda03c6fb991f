// Package controller benchmarks the StatefulMigration controller's own
// cost: the reconcile loop driving a migration through its phases against
// a real API server (envtest), with every outside party answering at once.
// The sidecars, the node agent and the kubelet are FAKES, named as such
// below: they answer instantly and always succeed, so what is measured is
// the controller's reconciles, status patches, watches and the API
// server's round trips — the floor under every real migration.
//
// It lives outside pkg/controllers/migration so its TestMain (one control
// plane for all runs) never collides with that package's own suite.
package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ms2m/ms2m/internal/testenv"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/controllers/migration"
	"github.com/ms2m/ms2m/pkg/replay"
	"github.com/ms2m/ms2m/scheduler"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	os.Exit(testenv.RunBenchmarksMain(m, &env, testenv.Options{}))
}

const (
	ns         = "default"
	sourceNode = "node-a"
	targetNode = "node-b"
)

// transitions a migration makes: Pending → Checkpointing → Transferring →
// Restoring → Replaying → Finalizing → Completed.
const transitions = 6

// BenchmarkPhaseTransitions migrates one bare pod per iteration, from
// creating the StatefulMigration to seeing it Completed, and reports the
// time per phase transition.
func BenchmarkPhaseTransitions(b *testing.B) {
	w := startWorld(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		name := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), i)
		b.StopTimer()
		if err := w.sourcePod(ctx, name); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		done := w.expect(name)
		m := &v1.StatefulMigration{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       v1.StatefulMigrationSpec{SourcePod: name, TargetNode: targetNode},
		}
		if err := env.Client.Create(ctx, m); err != nil {
			b.Fatal(err)
		}
		select {
		case m := <-done:
			if m.Status.Phase != v1.PhaseCompleted {
				b.Fatalf("migration %s %s: %s", m.Name, m.Status.Phase, m.Status.FailureReason)
			}
		case <-time.After(time.Minute):
			b.Fatalf("migration %s did not finish within a minute", name)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N*transitions), "ms/transition")
}

// world is the controller in a manager, with the fakes around it.
type world struct {
	c       client.Client
	broker  string
	mu      sync.Mutex
	waiters map[string]chan *v1.StatefulMigration
}

var (
	startOnce sync.Once
	theWorld  *world
	startErr  error
)

func startWorld(b *testing.B) *world {
	startOnce.Do(func() { theWorld, startErr = newWorld() })
	if startErr != nil {
		b.Fatal(startErr)
	}
	return theWorld
}

func newWorld() (*world, error) {
	log.SetLogger(zap.New(zap.WriteTo(devNull{})))
	ctx := context.Background()
	// The controller checks that the brokers answer a TCP dial; nothing
	// else talks Kafka here (the offsets come from the fake sidecar).
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
	})
	if err != nil {
		return nil, err
	}
	w := &world{c: mgr.GetClient(), broker: l.Addr().String(), waiters: map[string]chan *v1.StatefulMigration{}}
	nodes := scheduler.NewCache(mgr.GetCache())
	if err := mgr.Add(nodes); err != nil {
		return nil, err
	}
	opts := migration.DefaultOptions()
	opts.DefaultRepository = "registry.invalid/checkpoints"
	opts.MaxParallel, opts.MaxOutboundPerNode = 100, 100
	r := &migration.Reconciler{
		Client: mgr.GetClient(), Scheme: mgr.GetScheme(), Recorder: mgr.GetEventRecorderFor("bench"),
		Sidecars: fakeSidecars{}, Offsets: fakeOffsets{}, Nodes: nodes, Opts: opts,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if err := ctrl.NewControllerManagedBy(mgr).Named("fake-agent").For(&v1.StatefulMigration{}).Complete(reconcile.Func(w.fakeAgent)); err != nil {
		return nil, err
	}
	if err := ctrl.NewControllerManagedBy(mgr).Named("fake-kubelet").For(&corev1.Pod{}).Complete(reconcile.Func(w.fakeKubelet)); err != nil {
		return nil, err
	}
	for _, n := range []string{sourceNode, targetNode} {
		if err := createNode(ctx, env.Client, n); err != nil {
			return nil, err
		}
	}
	go func() { _ = mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		return nil, fmt.Errorf("the manager's cache did not sync")
	}
	return w, nil
}

// expect returns a channel that receives migration name once it is
// Completed or Failed.
func (w *world) expect(name string) <-chan *v1.StatefulMigration {
	ch := make(chan *v1.StatefulMigration, 1)
	w.mu.Lock()
	w.waiters[name] = ch
	w.mu.Unlock()
	return ch
}

// fakeAgent is a FAKE node agent: it reports a checkpoint archive as soon
// as the controller has recorded the offsets, and a pushed image as soon
// as the migration is Transferring, and it tells the benchmark when a
// migration has finished.
func (w *world) fakeAgent(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	m := &v1.StatefulMigration{}
	if err := w.c.Get(ctx, req.NamespacedName, m); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if m.Status.Phase.IsTerminal() {
		w.mu.Lock()
		ch := w.waiters[m.Name]
		delete(w.waiters, m.Name)
		w.mu.Unlock()
		if ch != nil {
			ch <- m
		}
		return reconcile.Result{}, nil
	}
	var key string
	var res v1.AgentResult
	switch {
	case len(m.Status.CheckpointOffsets) > 0 && m.Annotations[v1.AnnotationAgentCheckpoint] == "":
		key, res = v1.AnnotationAgentCheckpoint, v1.AgentResult{Node: sourceNode, Archive: "/var/lib/kubelet/checkpoints/fake.tar"}
	case m.Status.Phase == v1.PhaseTransferring && m.Annotations[v1.AnnotationAgentImage] == "":
		key, res = v1.AnnotationAgentImage, v1.AgentResult{Node: sourceNode, SizeBytes: 1 << 20,
			Image: "registry.invalid/checkpoints/fake@sha256:" + fmt.Sprintf("%064d", 0)}
	default:
		return reconcile.Result{}, nil
	}
	b, err := json.Marshal(res)
	if err != nil {
		return reconcile.Result{}, err
	}
	patch := client.MergeFrom(m.DeepCopy())
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	m.Annotations[key] = string(b)
	return reconcile.Result{}, w.c.Patch(ctx, m, patch)
}

// fakeKubelet is a FAKE scheduler and kubelet: it binds a pending pod to
// the node its affinity pins, reports it Running and Ready at once, and
// completes a deletion at once.
func (w *world) fakeKubelet(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	p := &corev1.Pod{}
	if err := w.c.Get(ctx, req.NamespacedName, p); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	switch {
	case p.DeletionTimestamp != nil:
		return reconcile.Result{}, client.IgnoreNotFound(w.c.Delete(ctx, p, client.GracePeriodSeconds(0)))
	case p.Spec.NodeName == "":
		node := pinnedNode(p)
		if node == "" {
			return reconcile.Result{}, nil
		}
		binding := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace},
			Target: corev1.ObjectReference{Kind: "Node", Name: node}}
		err := w.c.SubResource("binding").Create(ctx, p, binding)
		if apierrors.IsConflict(err) {
			return reconcile.Result{Requeue: true}, nil
		}
		return reconcile.Result{}, err
	case p.Status.Phase != corev1.PodRunning:
		running(p)
		return reconcile.Result{}, w.c.Status().Update(ctx, p)
	}
	return reconcile.Result{}, nil
}

func pinnedNode(p *corev1.Pod) string {
	a := p.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return ""
	}
	for _, t := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, e := range t.MatchExpressions {
			if e.Key == corev1.LabelHostname && e.Operator == corev1.NodeSelectorOpIn && len(e.Values) == 1 {
				return e.Values[0]
			}
		}
	}
	return ""
}

var podIPs struct {
	sync.Mutex
	next int
}

// running sets p's status as a kubelet would once its containers run.
func running(p *corev1.Pod) {
	podIPs.Lock()
	podIPs.next++
	n := podIPs.next
	podIPs.Unlock()
	now := metav1.Now()
	p.Status.Phase = corev1.PodRunning
	p.Status.PodIP = fmt.Sprintf("10.%d.%d.%d", n>>16&0xff, n>>8&0xff, n&0xff)
	p.Status.PodIPs = []corev1.PodIP{{IP: p.Status.PodIP}}
	p.Status.StartTime = &now
	p.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
	}
	p.Status.ContainerStatuses = nil
	for _, c := range p.Spec.Containers {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, Ready: true, Started: ptr.To(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
}

// sourcePod creates a migratable bare pod on the source node, as the
// webhook would have prepared it, and reports it Running and Ready.
func (w *world) sourcePod(ctx context.Context, name string) error {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "bench"}, Annotations: map[string]string{
			v1.AnnotationMigratable: "true", v1.AnnotationKafkaBrokers: w.broker, v1.AnnotationKafkaTopic: "orders",
			v1.AnnotationKafkaGroup: name, v1.AnnotationAppPort: "8080", v1.AnnotationCheckpointRestore: "enabled",
		}},
		Spec: corev1.PodSpec{
			NodeName: sourceNode,
			Containers: []corev1.Container{
				{Name: "app", Image: "ghcr.io/ms2m/ms2m:v0.1.0", Command: []string{"/ms2m/example-consumer"}},
				{Name: v1.SidecarContainerName, Image: "ghcr.io/ms2m/ms2m:v0.1.0", Command: []string{"/ms2m/ms2m-replay"}},
			},
		},
	}
	if err := env.Client.Create(ctx, p); err != nil {
		return err
	}
	// The fake kubelet may report it running first: either write wins.
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if p.Status.Phase == corev1.PodRunning {
			return nil
		}
		running(p)
		err := env.Client.Status().Update(ctx, p)
		if !apierrors.IsConflict(err) {
			return err
		}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(p), p); err != nil {
			return err
		}
	}
	return fmt.Errorf("pod %s: status update kept conflicting", name)
}

// createNode makes a Ready, untainted node whose (absent) agent has
// labelled it restore-capable.
func createNode(ctx context.Context, c client.Client, name string) error {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		corev1.LabelHostname: name, corev1.LabelOSStable: "linux", corev1.LabelArchStable: "amd64",
		v1.LabelCheckpointRestore: "true", v1.LabelRuntime: "fake", v1.LabelRuntimeVersion: "1.0", v1.LabelCRIUVersion: "4.0",
	}}}
	if err := c.Create(ctx, n); err != nil {
		return err
	}
	capacity := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("32Gi"), corev1.ResourcePods: resource.MustParse("1000")}
	n.Status = corev1.NodeStatus{
		Capacity: capacity, Allocatable: capacity,
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
		NodeInfo:   corev1.NodeSystemInfo{KernelVersion: "6.1.0", OperatingSystem: "linux", Architecture: "amd64"},
	}
	if err := c.Status().Update(ctx, n); err != nil {
		return err
	}
	// The API server taints a new node not-ready until its node lifecycle
	// controller sees the Ready condition; there is none here.
	n.Spec.Taints = nil
	return c.Update(ctx, n)
}

// fakeSidecars is a FAKE replay sidecar on every pod: each call succeeds
// at once; the target has always caught up (lag 0), so the replay phase
// cuts over on its first sample.
type fakeSidecars struct{}

var fakeNext = map[int]int64{0: 100, 1: 100}

func (fakeSidecars) Position(context.Context, string) (replay.Position, error) {
	return replay.Position{Mode: replay.ModeLive, Next: fakeNext}, nil
}
func (fakeSidecars) Pause(context.Context, string) (replay.Position, error) {
	return replay.Position{Mode: replay.ModeLive, Next: fakeNext, Paused: true}, nil
}
func (fakeSidecars) Resume(context.Context, string) (replay.Position, error) {
	return replay.Position{Mode: replay.ModeLive, Next: fakeNext}, nil
}
func (fakeSidecars) Fence(context.Context, string) (replay.Position, error) {
	return replay.Position{Mode: replay.ModeFenced, Next: fakeNext}, nil
}
func (fakeSidecars) Handover(context.Context, string, map[int]int64) (replay.Position, error) {
	return replay.Position{Mode: replay.ModeLive, Next: fakeNext}, nil
}

// fakeOffsets is a FAKE broker offset query: the sidecar's offsets are
// complete.
type fakeOffsets struct{}

func (fakeOffsets) Complete(_ context.Context, _ migration.Binding, next map[int]int64) (map[int]int64, error) {
	return next, nil
}

type devNull struct{}

func (devNull) Write(p []byte) (int, error) { return len(p), nil }
