package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ms2m/ms2m/internal/migrationtest"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/replay"
)

// blackholed is a FAKE: the sidecars of one namespace answer nothing
// (every call hangs until it times out, as a connection to an address that
// drops packets would); the others' are the instant fakes.
type blackholed struct {
	sidecars
	namespace string
	hold      time.Duration
}

// call answers for a black-holed sidecar after hanging (until the call
// times out, or hold), and otherwise makes the instant fake's call.
func (s blackholed) call(ctx context.Context, ep replay.Endpoint, fake func() (replay.Position, error)) (replay.Position, error) {
	if !strings.HasPrefix(ep.Audience, replay.ControlAudience(s.namespace, "")) {
		return fake()
	}
	t := time.NewTimer(s.hold)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	return replay.Position{}, errNoAnswer
}

var errNoAnswer = errors.New("FAKE black-holed sidecar: no answer")

func (s blackholed) Position(ctx context.Context, ep replay.Endpoint) (replay.Position, error) {
	return s.call(ctx, ep, func() (replay.Position, error) { return s.sidecars.Position(ctx, ep) })
}

func (s blackholed) Pause(ctx context.Context, ep replay.Endpoint) (replay.Position, error) {
	return s.call(ctx, ep, func() (replay.Position, error) { return s.sidecars.Pause(ctx, ep) })
}

func (s blackholed) CaughtUp(ctx context.Context, ep replay.Endpoint, timeout time.Duration) (replay.Position, error) {
	return s.call(ctx, ep, func() (replay.Position, error) { return s.sidecars.CaughtUp(ctx, ep, timeout) })
}

func (s blackholed) Resume(ctx context.Context, ep replay.Endpoint) (replay.Position, error) {
	return s.call(ctx, ep, func() (replay.Position, error) { return s.sidecars.Resume(ctx, ep) })
}

func (s blackholed) Rejoin(ctx context.Context, ep replay.Endpoint) (replay.Position, error) {
	return s.call(ctx, ep, func() (replay.Position, error) { return s.sidecars.Rejoin(ctx, ep) })
}

func (s blackholed) Fence(ctx context.Context, ep replay.Endpoint) (replay.Position, error) {
	return s.call(ctx, ep, func() (replay.Position, error) { return s.sidecars.Fence(ctx, ep) })
}

func (s blackholed) Abort(ctx context.Context, ep replay.Endpoint) (replay.Position, error) {
	return s.call(ctx, ep, func() (replay.Position, error) { return s.sidecars.Abort(ctx, ep) })
}

func (s blackholed) Handover(ctx context.Context, ep replay.Endpoint, fence map[int]int64) (replay.Position, error) {
	return s.call(ctx, ep, func() (replay.Position, error) { return s.sidecars.Handover(ctx, ep, fence) })
}

// BenchmarkNeighbourOfABlackholedTenant measures one tenant's migrations
// while another tenant's sidecars answer nothing (each call hangs 3 s, a
// connection timeout): 4 of that tenant's migrations are stuck retrying
// their pause throughout. It reports the quiet tenant's time per migration
// and its downtime (status.downtime, the controller's fence → live), each
// against a quiet run of the same world: "quiet" (no black-holed tenant),
// "8 workers" (the default) and "1 worker" (the controller before
// --migration-workers), so the ratios show what one tenant costs another.
func BenchmarkNeighbourOfABlackholedTenant(b *testing.B) {
	for _, tc := range []struct {
		name    string
		workers int
		stuck   int
	}{
		{"quiet", 8, 0},
		{"8 workers", 8, 4},
		{"1 worker", 1, 4},
	} {
		b.Run(tc.name, func(b *testing.B) {
			prefix := fmt.Sprintf("iso-%d-%d-%d", time.Now().UnixNano()%1e6, tc.workers, tc.stuck)
			tenant, neighbour := prefix+"-tenant", prefix+"-neighbour"
			w, err := newWorld(worldOptions{namespaces: []string{tenant, neighbour}, workers: tc.workers,
				sidecars: blackholed{sidecars: migrationtest.NewSidecars(map[int]int64{0: 100, 1: 100}), namespace: tenant, hold: 3 * time.Second}})
			if err != nil {
				b.Fatal(err)
			}
			defer w.stop()
			ctx := context.Background()
			for i := range tc.stuck {
				name := fmt.Sprintf("stuck-%d", i)
				if err := w.sourcePod(ctx, tenant, name); err != nil {
					b.Fatal(err)
				}
				if err := w.c.Create(ctx, &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Namespace: tenant, Name: name},
					Spec: v1.StatefulMigrationSpec{SourcePod: name, TargetNode: targetNode}}); err != nil {
					b.Fatal(err)
				}
			}
			var downtimes []time.Duration
			b.ResetTimer()
			for i := range b.N {
				name := fmt.Sprintf("quiet-%d", i)
				b.StopTimer()
				if err := w.sourcePod(ctx, neighbour, name); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				done := w.expect(name)
				if err := w.c.Create(ctx, &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Namespace: neighbour, Name: name},
					Spec: v1.StatefulMigrationSpec{SourcePod: name, TargetNode: targetNode}}); err != nil {
					b.Fatal(err)
				}
				select {
				case m := <-done:
					if m.Status.Phase != v1.PhaseCompleted {
						b.Fatalf("migration %s %s: %s", m.Name, m.Status.Phase, m.Status.FailureReason)
					}
					if m.Status.Downtime != nil {
						downtimes = append(downtimes, m.Status.Downtime.Duration)
					}
				case <-time.After(2 * time.Minute):
					b.Fatalf("the neighbour's migration %s did not finish within 2 minutes", name)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/migration")
			if len(downtimes) > 0 {
				slices.Sort(downtimes)
				b.ReportMetric(float64(downtimes[len(downtimes)/2].Microseconds())/1000, "downtime-p50-ms")
			}
		})
	}
}
