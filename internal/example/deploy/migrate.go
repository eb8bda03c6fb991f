package deploy

import (
	"context"
	"fmt"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migrationclient"
)

// Migrate creates a StatefulMigration of pod (to targetNode, or the best
// node when empty), reports its progress as the controller writes it (the
// lines `kubectl ms2m migrate --wait` prints), and returns the finished
// migration.
func Migrate(ctx context.Context, cfg *rest.Config, ns, pod, targetNode string, say Progress) (*v1.StatefulMigration, error) {
	c, err := migrationclient.New(cfg)
	if err != nil {
		return nil, err
	}
	m, err := migrationclient.Create(ctx, c, migrationclient.Request{Namespace: ns, Pod: pod, TargetNode: targetNode, GenerateName: "move-"})
	if err != nil {
		return nil, err
	}
	say("created StatefulMigration %s of pod %s", m.Name, pod)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var p migrationclient.Progress
	last, err := migrationclient.Follow(ctx, c, client.ObjectKeyFromObject(m), func(m *v1.StatefulMigration) {
		for _, l := range p.Observe(m) {
			say("%s", l.Text)
		}
	})
	if last != nil {
		m = last
	}
	if err != nil {
		return m, fmt.Errorf("migration %s is %s: %w", m.Name, m.Status.Phase, err)
	}
	return m, nil
}

// Timings renders a finished migration's phase durations and downtime.
func Timings(m *v1.StatefulMigration) string { return migrationclient.Timings(m) }
