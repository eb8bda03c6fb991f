package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/ms2m/ms2m/internal/example/deploy"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// ManagerRestartInput configures ManagerRestartSpec.
type ManagerRestartInput struct {
	Cluster *Cluster
	Rate    float64
	Count   int64
}

var ordered = []v1.Phase{v1.PhasePending, v1.PhaseCheckpointing, v1.PhaseTransferring, v1.PhaseRestoring,
	v1.PhaseReplaying, v1.PhaseFinalizing, v1.PhaseCompleted, v1.PhaseFailed}

// ManagerRestartSpec: the manager is restarted while a migration is in
// each phase in turn (or, when a phase ends before the restart lands, the
// next one); every migration still completes, and across all of them no
// message is lost or processed twice live.
func ManagerRestartSpec(in ManagerRestartInput) features.Feature {
	return features.New("migrations survive a manager restart in any phase").
		Assess("restart during each phase; all complete; zero loss", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			c := in.Cluster
			if c.Sandbox == nil {
				t.Skip("restarts the sandbox's in-process manager")
			}
			ns := c.Namespace(t, "restart")
			e := deploy.Example{Name: "orders", Brokers: c.Brokers, Topic: ns + "-orders", Rate: in.Rate, Count: in.Count, ProcessTime: 2 * time.Millisecond}
			deployExample(ctx, t, c, ns, e, 20)
			cl := c.CRClient(t)
			// Each migration moves the previous one's target: a pod that
			// carries an earlier migration's pin to its node.
			for i, at := range []v1.Phase{v1.PhaseCheckpointing, v1.PhaseTransferring, v1.PhaseRestoring, v1.PhaseReplaying, v1.PhaseFinalizing} {
				cur, err := deploy.FindConsumer(ctx, c.Client, ns, e)
				if err != nil {
					t.Fatal(err)
				}
				m := &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("restart-%d", i), Namespace: ns},
					Spec: v1.StatefulMigrationSpec{SourcePod: cur.Pod.Name}}
				if err := cl.Create(ctx, m); err != nil {
					t.Fatal(err)
				}
				reached := waitPhase(t, cl, m, at)
				if err := c.Sandbox.RestartManager(ctx); err != nil {
					t.Fatal(err)
				}
				got := waitFinished(t, c, cl, m)
				if got.Status.Phase != v1.PhaseCompleted {
					t.Fatalf("restart in %s: migration %s: %s", reached, got.Status.Phase, got.Status.FailureReason)
				}
				t.Logf("manager restarted in %s: migration completed, downtime %s", reached, got.Status.Downtime.Duration)
			}
			verifyZeroLoss(ctx, t, c, ns, e)
			return ctx
		}).Feature()
}

// waitPhase polls fast until m is in phase at or a later one, and returns
// the phase seen.
func waitPhase(t *testing.T, cl client.Client, m *v1.StatefulMigration, at v1.Phase) v1.Phase {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		got := &v1.StatefulMigration{}
		if err := cl.Get(context.Background(), client.ObjectKeyFromObject(m), got); err == nil &&
			slices.Index(ordered, got.Status.Phase) >= slices.Index(ordered, at) {
			return got.Status.Phase
		}
		time.Sleep(5 * time.Millisecond) // polling interval: phases last tens of milliseconds
	}
	t.Fatalf("migration %s never reached %s", m.Name, at)
	return ""
}
