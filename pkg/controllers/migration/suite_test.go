package migration

// The controller suite: the reconciler against a real API server and etcd
// (envtest), driven one reconcile at a time with a FAKE clock, FAKE
// sidecars, a FAKE node agent and a FAKE kubelet (internal/migrationtest).
// What the fakes stand for is covered for real by the sandbox's e2e specs;
// here every phase, timeout, rollback, cancel, budget wait, conflict and
// restart is exact and takes a second or less.

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kwait "k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ms2m/ms2m/internal/migrationtest"
	"github.com/ms2m/ms2m/internal/testenv"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migratable"
	"github.com/ms2m/ms2m/scheduler"
)

var (
	env *testenv.Env
	// api reads and writes the API server directly; cached reads through
	// the manager's cache, with the reconciler's indexes, as in production.
	api     client.Client
	cached  client.Client
	restCfg *rest.Config
	broker  string
	seq     atomic.Int64
)

func TestMain(m *testing.M) {
	os.Exit(testenv.RunMain(m, &env, testenv.Options{}, startSuite))
}

func startSuite(e *testenv.Env) (func(), error) {
	log.SetLogger(zap.New(zap.WriteTo(discard{})))
	s := e.Scheme
	// The suite drives reconciles back to back: no client-side throttling.
	cfg := rest.CopyConfig(e.Config)
	cfg.QPS, cfg.Burst = 1000, 2000
	restCfg = cfg
	var err error
	if api, err = client.New(cfg, client.Options{Scheme: s}); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: s, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0"})
	if err != nil {
		cancel()
		return nil, err
	}
	if err := IndexFields(ctx, mgr.GetFieldIndexer()); err != nil {
		cancel()
		return nil, err
	}
	// The reconciler only dials the brokers (the offsets come from the
	// fake sidecar): a listener that accepts and closes is enough.
	l, err := migrationtest.Broker()
	if err != nil {
		cancel()
		return nil, err
	}
	broker = l.Addr().String()
	go func() { _ = mgr.Start(ctx) }()
	// Informers for what the reconciler reads, started before any test.
	for _, o := range []client.Object{&v1.StatefulMigration{}, &corev1.Pod{}, &corev1.Node{}} {
		if _, err := mgr.GetCache().GetInformer(ctx, o); err != nil {
			cancel()
			return nil, err
		}
	}
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		cancel()
		return nil, fmt.Errorf("the manager's cache did not sync")
	}
	cached = mgr.GetClient()
	return func() { cancel(); _ = l.Close() }, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// world is one test's cluster: a namespace, a source and a target node,
// the source pod, and a reconciler with fakes around it.
type world struct {
	t                      *testing.T
	ns, source, target     string
	sourceNode, targetNode string
	clock                  *clocktesting.FakeClock
	sidecars               *migrationtest.Sidecars
	events                 *record.FakeRecorder
	r                      *Reconciler
	// What the fakes withhold: the agent's checkpoint or image report,
	// the kubelet running pods.
	noCheckpoint, noImage, kubeletStopped bool
	// imageError is the agent's push failure to report, if any.
	imageError string
	// statefulSet, when set, is the source's pod as its StatefulSet
	// creates it: the FAKE StatefulSet controller recreates it, through
	// the pod mutation webhook's restore, once the source is gone.
	statefulSet *corev1.Pod
	// webhookDown: the StatefulSet's pod is recreated without the restore.
	webhookDown bool
	// sourceMutate, when set, changes the source pod before it is created.
	sourceMutate func(*corev1.Pod)
}

type option func(*world, *Options)

func newWorld(t *testing.T, opts ...option) *world {
	t.Helper()
	ctx := context.Background()
	n := seq.Add(1)
	w := &world{
		t: t, ns: fmt.Sprintf("suite-%d", n), source: "orders",
		sourceNode: fmt.Sprintf("suite-%d-a", n), targetNode: fmt.Sprintf("suite-%d-b", n),
		clock:    clocktesting.NewFakeClock(time.Now().Truncate(time.Second)),
		sidecars: migrationtest.NewSidecars(map[int]int64{0: 100, 1: 40}),
		events:   record.NewFakeRecorder(1000),
	}
	must(t, api.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: w.ns}}))
	var nodes []client.Object
	for _, name := range []string{w.sourceNode, w.targetNode} {
		node, err := migrationtest.CreateNode(ctx, api, name)
		must(t, err)
		nodes = append(nodes, node)
	}
	t.Cleanup(func() {
		for _, name := range []string{w.sourceNode, w.targetNode} {
			_ = api.Delete(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}})
		}
	})
	// The migrations' finalizers: no reconciler runs after the test.
	t.Cleanup(func() {
		ctx := context.Background()
		var list v1.StatefulMigrationList
		_ = api.List(ctx, &list, client.InNamespace(w.ns))
		for i := range list.Items {
			m := &list.Items[i]
			patch := client.MergeFrom(m.DeepCopy())
			m.Finalizers = nil
			_ = api.Patch(ctx, m, patch)
			_ = api.Delete(ctx, m)
		}
	})
	o := DefaultOptions()
	o.DefaultRepository = "registry.invalid/checkpoints"
	for _, opt := range opts {
		opt(w, &o)
	}
	src := migrationtest.SourcePod(w.ns, w.source, w.sourceNode, broker)
	if w.statefulSet != nil {
		src.OwnerReferences = w.statefulSet.OwnerReferences
	}
	if w.sourceMutate != nil {
		w.sourceMutate(src)
	}
	must(t, api.Create(ctx, src))
	must(t, migrationtest.ReportRunning(ctx, api, src))
	w.r = w.reconciler(o, nodes)
	return w
}

// reconciler is a new Reconciler, as a restarted manager builds it: no
// memory of earlier reconciles.
func (w *world) reconciler(o Options, nodes []client.Object) *Reconciler {
	return &Reconciler{
		Client: cached, Scheme: cached.Scheme(), Recorder: w.events, Clock: w.clock,
		Sidecars: w.sidecars, Nodes: scheduler.NewCacheFrom(nodes...), Opts: o,
	}
}

func (w *world) restart() {
	w.t.Helper()
	old := w.r
	var nodes []client.Object
	for _, name := range []string{w.sourceNode, w.targetNode} {
		n := &corev1.Node{}
		must(w.t, api.Get(context.Background(), client.ObjectKey{Name: name}, n))
		nodes = append(nodes, n)
	}
	w.r = w.reconciler(old.Opts, nodes)
	w.r.Client = old.Client
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// migrate creates a StatefulMigration of the source pod to the target node.
func (w *world) migrate(name string, change ...func(*v1.StatefulMigration)) *v1.StatefulMigration {
	w.t.Helper()
	m := &v1.StatefulMigration{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: name},
		Spec:       v1.StatefulMigrationSpec{SourcePod: w.source, TargetNode: w.targetNode},
	}
	for _, c := range change {
		c(m)
	}
	must(w.t, api.Create(context.Background(), m))
	return m
}

func (w *world) get(m *v1.StatefulMigration) *v1.StatefulMigration {
	w.t.Helper()
	got := &v1.StatefulMigration{}
	must(w.t, api.Get(context.Background(), client.ObjectKeyFromObject(m), got))
	return got
}

// reconcile runs one reconcile of m, as the controller's queue would.
func (w *world) reconcile(m *v1.StatefulMigration) (reconcile.Result, error) {
	return w.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(m)})
}

// until reconciles m, letting the fake agent and kubelet answer between
// reconciles, until done holds of the migration as the API server has it;
// it fails the test after 20 s (the cache may lag a write by a moment: a
// reconcile that read a stale migration loses its status write and is
// simply run again).
func (w *world) until(m *v1.StatefulMigration, what string, done func(*v1.StatefulMigration) bool) *v1.StatefulMigration {
	w.t.Helper()
	ctx := context.Background()
	var last *v1.StatefulMigration
	var lastErr error
	err := kwait.PollUntilContextTimeout(ctx, 5*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		last = &v1.StatefulMigration{}
		if err := api.Get(ctx, client.ObjectKeyFromObject(m), last); err != nil {
			if apierrors.IsNotFound(err) {
				last = nil
				return done(nil), nil
			}
			return false, err
		}
		if done(last) {
			return true, nil
		}
		if _, err := w.reconcile(m); err != nil {
			lastErr = err
		}
		w.fakeAgent(ctx, last)
		w.fakeKubelet(ctx)
		return false, nil
	})
	if err != nil {
		phase, reason := v1.Phase("gone"), ""
		if last != nil {
			phase, reason = last.Status.Phase, last.Status.FailureReason
		}
		w.t.Fatalf("migration %s: not %s within 20s: phase %s %s (%v; last reconcile error: %v)", m.Name, what, phase, reason, err, lastErr)
	}
	return last
}

// fresh waits until the reconciler's cache holds m as the API server has
// it, and ok holds of it.
func (w *world) fresh(m *v1.StatefulMigration, ok func(*v1.StatefulMigration) bool) {
	w.t.Helper()
	err := kwait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		want, got := &v1.StatefulMigration{}, &v1.StatefulMigration{}
		if err := api.Get(ctx, client.ObjectKeyFromObject(m), want); err != nil {
			return false, err
		}
		if err := cached.Get(ctx, client.ObjectKeyFromObject(m), got); err != nil {
			return false, nil
		}
		return got.ResourceVersion == want.ResourceVersion && ok(got), nil
	})
	if err != nil {
		w.t.Fatalf("migration %s: the cache did not catch up: %v", m.Name, err)
	}
}

func inPhase(p v1.Phase) func(*v1.StatefulMigration) bool {
	return func(m *v1.StatefulMigration) bool { return m != nil && m.Status.Phase == p }
}

func gone(m *v1.StatefulMigration) bool { return m == nil }

// fakeAgent is the FAKE node agent: migrationtest.AgentReport, unless
// withheld.
func (w *world) fakeAgent(ctx context.Context, m *v1.StatefulMigration) {
	key, value := migrationtest.AgentReport(ctx, m, w.sidecars)
	switch {
	case key == v1.AnnotationAgentImage && w.imageError != "":
		value = fmt.Sprintf(`{"node":%q,"error":%q}`, m.Status.SourceNode, w.imageError)
	case key == "", key == v1.AnnotationAgentCheckpoint && w.noCheckpoint, key == v1.AnnotationAgentImage && w.noImage:
		return
	}
	_ = migrationtest.Annotate(ctx, api, m, key, value)
}

// fakeKubelet is the FAKE scheduler and kubelet: it binds the namespace's
// pending pods to the node their affinity pins, reports them Running and
// Ready, and completes deletions at once (unless stopped).
func (w *world) fakeKubelet(ctx context.Context) {
	if w.kubeletStopped {
		return
	}
	w.fakeStatefulSet(ctx)
	var pods corev1.PodList
	if err := api.List(ctx, &pods, client.InNamespace(w.ns)); err != nil {
		return
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		switch {
		case p.DeletionTimestamp != nil:
			_ = api.Delete(ctx, p, client.GracePeriodSeconds(0))
		case p.Spec.NodeName == "":
			if node := migrationtest.PinnedNode(p); node != "" {
				_ = migrationtest.Bind(ctx, api, p, node)
			}
		case p.Status.Phase != corev1.PodRunning:
			_ = migrationtest.ReportRunning(ctx, api, p)
		}
	}
}

// fakeStatefulSet is the FAKE StatefulSet controller and pod mutation
// webhook: it recreates the StatefulSet's pod when it is gone, turned into
// the restored pod by migratable.RestoreStatefulSetPodFrom when a
// Sequential migration waits for it, as the webhook does.
func (w *world) fakeStatefulSet(ctx context.Context) {
	if w.statefulSet == nil {
		return
	}
	if err := api.Get(ctx, client.ObjectKeyFromObject(w.statefulSet), &corev1.Pod{}); !apierrors.IsNotFound(err) {
		return
	}
	p := w.statefulSet.DeepCopy()
	if !w.webhookDown {
		if _, err := migratable.RestoreStatefulSetPodFrom(ctx, api, w.ns, p); err != nil {
			return
		}
	}
	_ = api.Create(ctx, p)
}

// pod returns the namespace's pod name (nil: gone or being deleted).
func (w *world) pod(name string) *corev1.Pod {
	p := &corev1.Pod{}
	if err := api.Get(context.Background(), client.ObjectKey{Namespace: w.ns, Name: name}, p); err != nil || p.DeletionTimestamp != nil {
		return nil
	}
	return p
}

// recorded drains the Events recorded so far.
func (w *world) recorded() []string {
	var out []string
	for {
		select {
		case e := <-w.events.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func hasEvent(events []string, prefix string) bool {
	for _, e := range events {
		if strings.HasPrefix(e, prefix) {
			return true
		}
	}
	return false
}

func condition(m *v1.StatefulMigration, t string) *metav1.Condition {
	for i := range m.Status.Conditions {
		if m.Status.Conditions[i].Type == t {
			return &m.Status.Conditions[i]
		}
	}
	return nil
}

// beforeStatusWrite wraps c so that hook runs before each status write of
// a StatefulMigration; an error from it is returned in place of the write
// (as if the manager died just before it).
func beforeStatusWrite(c client.Client, hook func(ctx context.Context, m *v1.StatefulMigration) error) client.Client {
	return hookedClient{Client: c, hook: hook}
}

type hookedClient struct {
	client.Client
	hook func(ctx context.Context, m *v1.StatefulMigration) error
}

func (c hookedClient) Status() client.SubResourceWriter {
	return hookedStatus{SubResourceWriter: c.Client.Status(), hook: c.hook}
}

type hookedStatus struct {
	client.SubResourceWriter
	hook func(ctx context.Context, m *v1.StatefulMigration) error
}

func (s hookedStatus) Patch(ctx context.Context, o client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
	if m, ok := o.(*v1.StatefulMigration); ok {
		if err := s.hook(ctx, m); err != nil {
			return err
		}
	}
	return s.SubResourceWriter.Patch(ctx, o, p, opts...)
}
