package evacuation_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrl "sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ms2m/ms2m/internal/testenv"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	ctl "github.com/ms2m/ms2m/pkg/controllers/evacuation"
	"github.com/ms2m/ms2m/pkg/evacuation"
)

// The evacuation controller runs in a manager against a real API server;
// no migration controller runs, so its migrations stay where it left them.

var env *testenv.Env

func TestMain(m *testing.M) {
	os.Exit(testenv.RunMain(m, &env, testenv.Options{}, startController))
}

func startController(e *testenv.Env) (func(), error) {
	mgr, err := ctrl.New(e.Config, ctrl.Options{Scheme: e.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		return nil, err
	}
	r := &ctl.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("ms2m-evacuation")}
	if err := r.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = mgr.Start(ctx) }()
	return cancel, nil
}

func eventually(t *testing.T, what string, fn func(ctx context.Context) error) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		last = fn(ctx)
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, last)
	}
}

func pod(t *testing.T, name, node string, migratable bool) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "example"}}}}
	if migratable {
		// As the mutating webhook leaves it.
		p.Annotations = map[string]string{v1.AnnotationMigratable: "true", v1.AnnotationCheckpointRestore: "enabled"}
	}
	if err := env.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	p.Status.Phase = corev1.PodRunning
	if err := env.Client.Status().Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func node(t *testing.T, name string) *corev1.Node {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := env.Client.Create(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	return n
}

func setNode(t *testing.T, n *corev1.Node, change func(*corev1.Node)) {
	t.Helper()
	ctx := context.Background()
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(n), n); err != nil {
		t.Fatal(err)
	}
	change(n)
	if err := env.Client.Update(ctx, n); err != nil {
		t.Fatal(err)
	}
}

func migrationOf(ctx context.Context, p *corev1.Pod) (*v1.StatefulMigration, error) {
	m := &v1.StatefulMigration{}
	err := env.Client.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: evacuation.MigrationName(p)}, m)
	return m, err
}

func TestCordonStartsMigrationsAndUncordonCancelsThem(t *testing.T) {
	n := node(t, "node-cordon")
	mover := pod(t, "mover", n.Name, true)
	stayer := pod(t, "stayer", n.Name, false)
	elsewhere := pod(t, "elsewhere", "node-other", true)

	setNode(t, n, func(n *corev1.Node) { n.Spec.Unschedulable = true })
	eventually(t, "the migratable pod's migration", func(ctx context.Context) error {
		m, err := migrationOf(ctx, mover)
		if err != nil {
			return err
		}
		if m.Spec.SourcePod != mover.Name || m.Labels[v1.LabelTrigger] != evacuation.Trigger || m.Labels[evacuation.LabelSourceNode] != n.Name {
			return fmt.Errorf("migration %s: source %s labels %v", m.Name, m.Spec.SourcePod, m.Labels)
		}
		return nil
	})
	eventually(t, "the node's Evacuating event", func(ctx context.Context) error {
		var evs corev1.EventList
		if err := env.Client.List(ctx, &evs, client.InNamespace("default")); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == n.Name && e.Reason == "Evacuating" && strings.Contains(e.Message, "1 live migration") {
				return nil
			}
		}
		return fmt.Errorf("no Evacuating event on %s", n.Name)
	})
	for _, p := range []*corev1.Pod{stayer, elsewhere} {
		if _, err := migrationOf(context.Background(), p); !apierrors.IsNotFound(err) {
			t.Errorf("pod %s got a migration (%v); only migratable pods of the cordoned node move", p.Name, err)
		}
	}

	// Uncordoned before the migration started (no migration controller
	// runs here, so it is still Pending): cancelled.
	setNode(t, n, func(n *corev1.Node) { n.Spec.Unschedulable = false })
	eventually(t, "the pending migration cancelled", func(ctx context.Context) error {
		if _, err := migrationOf(ctx, mover); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})

	// The drain taint works like cordoning.
	setNode(t, n, func(n *corev1.Node) {
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: evacuation.TaintDrain, Effect: corev1.TaintEffectNoSchedule})
	})
	eventually(t, "the migration started again by the drain taint", func(ctx context.Context) error {
		_, err := migrationOf(ctx, mover)
		return err
	})
}

// A migration that is past Pending is not cancelled by an uncordon, and a
// failed evacuation is not retried by itself.
func TestStartedAndFailedMigrationsAreLeftAlone(t *testing.T) {
	ctx := context.Background()
	n := node(t, "node-started")
	running := pod(t, "running", n.Name, true)
	failed := pod(t, "failed", n.Name, true)
	pending := pod(t, "pending", n.Name, true)
	setNode(t, n, func(n *corev1.Node) { n.Spec.Unschedulable = true })
	for _, p := range []*corev1.Pod{running, failed, pending} {
		eventually(t, "migration of "+p.Name, func(ctx context.Context) error { _, err := migrationOf(ctx, p); return err })
	}
	setPhase := func(p *corev1.Pod, phase v1.Phase) {
		m, err := migrationOf(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		m.Status.Phase = phase
		if err := env.Client.Status().Update(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	setPhase(running, v1.PhaseReplaying)
	setPhase(failed, v1.PhaseFailed)
	setNode(t, n, func(n *corev1.Node) { n.Spec.Unschedulable = false })
	// The still-Pending one going is the sign the uncordon was handled.
	eventually(t, "the pending migration cancelled", func(ctx context.Context) error {
		if _, err := migrationOf(ctx, pending); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
	if m, err := migrationOf(ctx, running); err != nil || m.Status.Phase != v1.PhaseReplaying {
		t.Fatalf("a started migration was cancelled by the uncordon: %v", err)
	}
	// Cordoned again: the pending pod's migration comes back, the failed
	// one is kept as it is.
	setNode(t, n, func(n *corev1.Node) { n.Spec.Unschedulable = true })
	eventually(t, "the pending pod's migration again", func(ctx context.Context) error { _, err := migrationOf(ctx, pending); return err })
	if m, err := migrationOf(ctx, failed); err != nil || m.Status.Phase != v1.PhaseFailed {
		t.Fatalf("the failed evacuation was replaced: %v", err)
	}
}
