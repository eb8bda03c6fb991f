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
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ms2m/ms2m/internal/migrationtest"
	"github.com/ms2m/ms2m/internal/testenv"
	"github.com/ms2m/ms2m/pkg/agent"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/controllers/migration"
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
		if err := w.sourcePod(ctx, ns, name); err != nil {
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

// floorNamespace holds BenchmarkStatusRoundTrip's migrations: no
// controller watches it.
const floorNamespace = "bench-floor"

// BenchmarkStatusRoundTrip is the floor under BenchmarkPhaseTransitions,
// run against the same API server while the manager runs: per
// transition, one status write of a StatefulMigration and the watch event
// that shows it, the least a controller that records each phase can do.
// Nothing reconciles its namespace. ms/transition here against there is
// the controller's own cost per transition.
func BenchmarkStatusRoundTrip(b *testing.B) {
	startWorld(b)
	ctx := b.Context()
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		b.Fatal(err)
	}
	if err := wc.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: floorNamespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		b.Fatal(err)
	}
	phases := []v1.Phase{v1.PhaseCheckpointing, v1.PhaseTransferring, v1.PhaseRestoring, v1.PhaseReplaying, v1.PhaseFinalizing, v1.PhaseCompleted}
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		m := &v1.StatefulMigration{
			ObjectMeta: metav1.ObjectMeta{Namespace: floorNamespace, Name: fmt.Sprintf("floor-%d-%d", time.Now().UnixNano(), i)},
			Spec:       v1.StatefulMigrationSpec{SourcePod: "orders", TargetNode: targetNode},
		}
		if err := wc.Create(ctx, m); err != nil {
			b.Fatal(err)
		}
		events, err := wc.Watch(ctx, &v1.StatefulMigrationList{}, client.InNamespace(floorNamespace),
			client.MatchingFields{"metadata.name": m.Name}, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: m.ResourceVersion}})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		for _, phase := range phases {
			m.Status.Phase = phase
			if err := wc.Status().Update(ctx, m); err != nil {
				b.Fatal(err)
			}
			seen(b, events, m.ResourceVersion)
		}
		b.StopTimer()
		events.Stop()
		b.StartTimer()
	}
	if len(phases) != transitions {
		b.Fatalf("%d phases written; BenchmarkPhaseTransitions counts %d transitions", len(phases), transitions)
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N*transitions), "ms/transition")
}

// seen waits for the watch event of resource version rv.
func seen(b *testing.B, events watch.Interface, rv string) {
	b.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case ev, ok := <-events.ResultChan():
			if !ok {
				b.Fatal("the watch closed")
			}
			if o, isObj := ev.Object.(client.Object); isObj && o.GetResourceVersion() == rv {
				return
			}
		case <-timeout:
			b.Fatalf("no watch event of resource version %s within a minute", rv)
		}
	}
}

// world is the controller in a manager, with the fakes around it.
type world struct {
	c       client.Client
	broker  string
	mu      sync.Mutex
	waiters map[string]chan *v1.StatefulMigration
	stop    context.CancelFunc
	// sidecars, which the FAKE agent pauses for the checkpoint.
	sidecars sidecars
}

var (
	startOnce sync.Once
	theWorld  *world
	startErr  error
)

func startWorld(b *testing.B) *world {
	startOnce.Do(func() {
		theWorld, startErr = newWorld(worldOptions{namespaces: []string{ns}, sidecars: migrationtest.NewSidecars(map[int]int64{0: 100, 1: 100})})
	})
	if startErr != nil {
		b.Fatal(startErr)
	}
	return theWorld
}

// worldOptions shape a world: the namespaces its manager watches (worlds
// of other namespaces run side by side without touching each other's
// migrations), its sidecars and the controller's workers (0: default).
type worldOptions struct {
	namespaces []string
	sidecars   sidecars
	workers    int
}

func newWorld(o worldOptions) (w *world, err error) {
	log.SetLogger(zap.New(zap.WriteTo(devNull{})))
	ctx, stop := context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			stop()
		}
	}()
	// The controller checks that the brokers answer a TCP dial; nothing
	// else talks Kafka here (the offsets come from the fake sidecar, as
	// the fake agent's pause answers them).
	l, err := migrationtest.Broker()
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, func() { _ = l.Close() })
	namespaces := map[string]cache.Config{}
	for _, n := range o.namespaces {
		namespaces[n] = cache.Config{}
		if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, err
		}
	}
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Cache:      cache.Options{DefaultNamespaces: namespaces},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return nil, err
	}
	w = &world{c: mgr.GetClient(), broker: l.Addr().String(), waiters: map[string]chan *v1.StatefulMigration{}, stop: stop, sidecars: o.sidecars}
	nodes := scheduler.NewCache(mgr.GetCache())
	if err := mgr.Add(nodes); err != nil {
		return nil, err
	}
	opts := migration.DefaultOptions()
	opts.DefaultRepository = "registry.invalid/checkpoints"
	opts.MaxParallel, opts.MaxOutboundPerNode, opts.MaxParallelPerNamespace = 100, 100, 100
	if o.workers > 0 {
		opts.Workers = o.workers
	}
	r := &migration.Reconciler{
		Client: mgr.GetClient(), Scheme: mgr.GetScheme(), Recorder: mgr.GetEventRecorderFor("bench"),
		Sidecars: o.sidecars, Nodes: nodes, Opts: opts,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	// As the real agent, several migrations at once: a black-holed
	// tenant's sidecar holds one worker, not the node's other checkpoints.
	if err := ctrl.NewControllerManagedBy(mgr).Named("fake-agent").For(&v1.StatefulMigration{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: agent.Workers}).Complete(reconcile.Func(w.fakeAgent)); err != nil {
		return nil, err
	}
	if err := ctrl.NewControllerManagedBy(mgr).Named("fake-kubelet").For(&corev1.Pod{}).Complete(reconcile.Func(w.fakeKubelet)); err != nil {
		return nil, err
	}
	for _, n := range []string{sourceNode, targetNode} {
		if _, err := migrationtest.CreateNode(ctx, env.Client, n); err != nil && !apierrors.IsAlreadyExists(err) {
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

// sidecars are what the controller calls and what the FAKE agent calls
// (it pauses and resumes the source for the checkpoint).
type sidecars interface {
	migration.Sidecars
	migrationtest.Pauser
}

// fakeAgent is a FAKE node agent (migrationtest.AgentReport) that also
// tells the benchmark when a migration has finished.
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
	key, value := migrationtest.AgentReport(ctx, m, w.sidecars)
	if key == "" {
		return reconcile.Result{}, nil
	}
	return reconcile.Result{}, migrationtest.Annotate(ctx, w.c, m, key, value)
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
		node := migrationtest.PinnedNode(p)
		if node == "" {
			return reconcile.Result{}, nil
		}
		err := migrationtest.Bind(ctx, w.c, p, node)
		if apierrors.IsConflict(err) {
			return reconcile.Result{Requeue: true}, nil
		}
		return reconcile.Result{}, err
	case p.Status.Phase != corev1.PodRunning:
		migrationtest.Running(p)
		return reconcile.Result{}, w.c.Status().Update(ctx, p)
	}
	return reconcile.Result{}, nil
}

// sourcePod creates a migratable bare pod on the source node, as the
// webhook would have prepared it, and reports it Running and Ready.
func (w *world) sourcePod(ctx context.Context, namespace, name string) error {
	p := migrationtest.SourcePod(namespace, name, sourceNode, w.broker)
	if err := env.Client.Create(ctx, p); err != nil {
		return err
	}
	// The fake kubelet may report it running first: either write wins.
	return migrationtest.ReportRunning(ctx, env.Client, p)
}

type devNull struct{}

func (devNull) Write(p []byte) (int, error) { return len(p), nil }
