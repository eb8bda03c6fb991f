package deploy

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// Migrate creates a StatefulMigration of pod (to targetNode, or the best
// node when empty), reports each phase as it is entered, and returns the
// finished migration.
func Migrate(ctx context.Context, cfg *rest.Config, ns, pod, targetNode string, say Progress) (*v1.StatefulMigration, error) {
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return nil, err
	}
	if err := v1.AddToScheme(c.Scheme()); err != nil {
		return nil, err
	}
	m := &v1.StatefulMigration{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "move-", Namespace: ns},
		Spec:       v1.StatefulMigrationSpec{SourcePod: pod, TargetNode: targetNode},
	}
	if err := c.Create(ctx, m); err != nil {
		return nil, err
	}
	say("created StatefulMigration %s of pod %s", m.Name, pod)
	seen := 0
	err = poll(ctx, 5*time.Minute, func(ctx context.Context) error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(m), m); err != nil {
			return err
		}
		for ; seen < len(m.Status.PhaseTransitions); seen++ {
			t := m.Status.PhaseTransitions[seen]
			say("  %-13s (node %s → %s)", t.Phase, m.Status.SourceNode, m.Status.TargetNode)
		}
		if !m.Status.Phase.IsTerminal() {
			return fmt.Errorf("migration %s is %s", m.Name, m.Status.Phase)
		}
		return nil
	})
	return m, err
}

// Timings renders a finished migration's phase durations and downtime.
func Timings(m *v1.StatefulMigration) string {
	out := ""
	tr := m.Status.PhaseTransitions
	for i := 0; i+1 < len(tr); i++ {
		out += fmt.Sprintf("  %-13s %8.1f ms\n", tr[i].Phase, float64(tr[i+1].EnteredTime.Sub(tr[i].EnteredTime.Time).Microseconds())/1000)
	}
	if len(tr) > 1 {
		out += fmt.Sprintf("  %-13s %8.1f ms\n", "total", float64(tr[len(tr)-1].EnteredTime.Sub(tr[0].EnteredTime.Time).Microseconds())/1000)
	}
	if m.Status.Downtime != nil {
		out += fmt.Sprintf("  %-13s %8.1f ms (fence → target live)\n", "downtime", float64(m.Status.Downtime.Microseconds())/1000)
	}
	if m.Status.Phase == v1.PhaseFailed {
		out += "  failed: " + m.Status.FailureReason + "\n"
	}
	return out
}
