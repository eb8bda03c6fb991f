package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/internal/expect"
	"github.com/ms2m/ms2m/internal/testenv"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// The plugin runs against a real kube-apiserver with the CRDs installed.
// No controller runs: the tests write the status the controller would,
// through the status subresource, and read what the plugin prints.

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.RunMain(m, &env, testenv.Options{})) }

// syncBuffer is written by a running command while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// plugin is one run of kubectl ms2m, in process.
type plugin struct {
	out, err syncBuffer
	done     chan int
}

// start runs kubectl ms2m args against the test API server.
func start(t *testing.T, args ...string) *plugin {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &plugin{done: make(chan int, 1)}
	args = append(args, "--kubeconfig", kubeconfig(t))
	go func() {
		p.done <- run(ctx, args, genericiooptions.IOStreams{In: strings.NewReader(""), Out: &p.out, ErrOut: &p.err})
	}()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	return p
}

// wait returns the exit code once the command has ended.
func (p *plugin) wait(t *testing.T) int {
	t.Helper()
	select {
	case code := <-p.done:
		p.done <- code
		return code
	case <-time.After(expect.Timeout):
		t.Fatalf("kubectl ms2m still running after %s\nstdout:\n%s\nstderr:\n%s", expect.Timeout, p.out.String(), p.err.String())
		return -1
	}
}

// kms2m runs kubectl ms2m args to the end.
func kms2m(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	p := start(t, args...)
	code = p.wait(t)
	return p.out.String(), p.err.String(), code
}

// expectOutput waits until the command has printed want (compared with
// runs of spaces collapsed, as tables align them).
func (p *plugin) expectOutput(t *testing.T, want string) {
	t.Helper()
	expect.Eventually(t, "output "+want, func() error {
		if !strings.Contains(squeeze(p.out.String()), want) {
			return fmt.Errorf("not printed yet; stdout so far:\n%s\nstderr:\n%s", p.out.String(), p.err.String())
		}
		return nil
	})
}

func squeeze(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.Join(strings.Fields(l), " ")
	}
	return strings.Join(lines, "\n")
}

func expectContains(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(squeeze(out), w) {
			t.Errorf("%s lacks %q:\n%s", what, w, out)
		}
	}
}

// kubeconfig is a cluster-admin kubeconfig for the test API server, as a
// user of the plugin has.
func kubeconfig(t *testing.T) string {
	t.Helper()
	return env.KubeconfigFile(t)
}

// namespace creates a namespace of its own for the test.
func namespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "kms2m-"}}
	if err := env.Client.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// newPod creates a running pod that can be migrated.
func newPod(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{v1.AnnotationMigratable: "true"}},
		Spec:       corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "app", Image: "example.com/orders:1"}}},
	}
	if err := env.Client.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

// migrationOption shapes a StatefulMigration a test creates.
type migrationOption func(*v1.StatefulMigration)

func withTarget(node string) migrationOption {
	return func(m *v1.StatefulMigration) { m.Spec.TargetNode = node }
}

func withFinalizer() migrationOption {
	return func(m *v1.StatefulMigration) { m.Finalizers = append(m.Finalizers, v1.FinalizerRollback) }
}

// withStatus writes st through the status subresource after creation.
func withStatus(st v1.StatefulMigrationStatus) migrationOption {
	return func(m *v1.StatefulMigration) { m.Status = st }
}

// newMigration creates a StatefulMigration of pod orders-0 (which need not
// exist: nothing here reconciles it).
func newMigration(t *testing.T, ns, name string, opts ...migrationOption) *v1.StatefulMigration {
	t.Helper()
	m := &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: v1.StatefulMigrationSpec{SourcePod: "orders-0"}}
	for _, o := range opts {
		o(m)
	}
	st := m.Status
	ctx := context.Background()
	if err := env.Client.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	if st.Phase != "" {
		m.Status = st
		if err := env.Client.Status().Update(ctx, m); err != nil {
			t.Fatalf("writing status: %v", err)
		}
	}
	return m
}

// setStatus changes the status of key as the controller would.
func setStatus(t *testing.T, key client.ObjectKey, change func(*v1.StatefulMigrationStatus)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		m := &v1.StatefulMigration{}
		if err := env.Client.Get(context.Background(), key, m); err != nil {
			return err
		}
		change(&m.Status)
		return env.Client.Status().Update(context.Background(), m)
	})
	if err != nil {
		t.Fatalf("writing status of %s: %v", key, err)
	}
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// enter moves st to phase, entered d after t0.
func enter(st *v1.StatefulMigrationStatus, phase v1.Phase, d time.Duration) {
	st.Phase = phase
	st.PhaseTransitions = append(st.PhaseTransitions, v1.PhaseTransition{Phase: phase, EnteredTime: metav1.NewMicroTime(t0.Add(d))})
}

func condition(st *v1.StatefulMigrationStatus, typ string, ok bool, reason, msg string) {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, LastTransitionTime: metav1.NewTime(t0)})
}

// completedStatus is the status of a migration that went through every
// phase, with every field the controller fills.
func completedStatus() v1.StatefulMigrationStatus {
	st := v1.StatefulMigrationStatus{SourceNode: "node-a", TargetNode: "node-b", TargetPod: "orders-0-ms2m-x1", Strategy: v1.StrategyShadowPod,
		CheckpointID: "ckpt-1", CheckpointImage: "registry.example.com/ckpt@sha256:" + strings.Repeat("ab", 32), CheckpointSizeBytes: 12 << 20,
		CheckpointOffsets: []v1.PartitionOffset{{Topic: "orders", Partition: 0, Offset: 120}, {Topic: "orders", Partition: 1, Offset: 98}},
		FenceOffsets:      []v1.PartitionOffset{{Topic: "orders", Partition: 0, Offset: 140}, {Topic: "orders", Partition: 1, Offset: 101}},
		TargetLiveOffsets: []v1.PartitionOffset{{Topic: "orders", Partition: 0, Offset: 140}, {Topic: "orders", Partition: 1, Offset: 101}},
		Downtime:          &metav1.Duration{Duration: 41 * time.Millisecond},
		Stalls: &v1.Stalls{CheckpointPause: &metav1.Duration{Duration: 29 * time.Millisecond},
			Handover: &metav1.Duration{Duration: 12 * time.Millisecond}, Measured: v1.StallsBySidecars},
	}
	ts := metav1.NewMicroTime(t0.Add(2500 * time.Millisecond))
	st.Replay = &v1.ReplayProgress{Replayed: 2400, Lag: 0, ReplayRatePerSecond: 900, ArrivalRatePerSecond: 300, LastSampleTime: &ts}
	for i, p := range []v1.Phase{v1.PhasePending, v1.PhaseCheckpointing, v1.PhaseTransferring, v1.PhaseRestoring, v1.PhaseReplaying, v1.PhaseFinalizing, v1.PhaseCompleted} {
		enter(&st, p, time.Duration(i)*500*time.Millisecond)
	}
	condition(&st, v1.ConditionHandedOver, true, v1.ReasonSucceeded, "target live from the fence offsets"+v1.HandoverPathPrefix+"fence call 2.0ms, controller 0.1ms, handover call 9.0ms")
	condition(&st, v1.ConditionReady, true, v1.ReasonSucceeded, "orders-0 now runs as orders-0-ms2m-x1 on node-b")
	return st
}

var errNotYet = errors.New("not yet")
