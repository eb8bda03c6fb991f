package e2e

import (
	"context"
	"testing"
	"time"

	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/ms2m/ms2m/internal/example/deploy"
)

// LiveInput configures LiveZeroLossSpec.
type LiveInput struct {
	Cluster *Cluster
	Brokers []string
	Rate    float64
	Count   int64
}

// LiveZeroLossSpec: the example consumer, opted in to ms2m, gets its replay
// sidecar from the webhook and processes every message the producer writes
// exactly once, ending with the state the input implies.
func LiveZeroLossSpec(in LiveInput) features.Feature {
	return features.New("the example workload processes a producer's stream with zero loss").
		Assess("sidecar injected, every message processed live exactly once, state exact", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			c := in.Cluster
			if len(in.Brokers) == 0 {
				t.Skip("no Kafka broker for this cluster (set E2E_BROKERS)")
			}
			ns := c.Namespace(t, "live")
			e := deploy.Example{Name: "orders", Brokers: in.Brokers, Topic: ns + "-orders", Rate: in.Rate, Count: in.Count}
			d, err := deploy.DeployConsumer(ctx, c.Client, ns, e, t.Logf)
			if err != nil {
				t.Fatal(err)
			}
			if err := deploy.Produce(ctx, c.Client, ns, e, t.Logf); err != nil {
				t.Fatal(err)
			}
			v, err := deploy.Verify(ctx, e, d.URL(), time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if !v.OK() || v.Input != int(in.Count) {
				t.Fatalf("%s (want %d input messages)", v, in.Count)
			}
			t.Log(v)
			return ctx
		}).Feature()
}
