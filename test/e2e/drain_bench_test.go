package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/internal/example/deploy"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/manager"
)

// BenchmarkDrainNode: the real `kubectl drain` of a sandbox node holding
// E2E_DRAIN_PODS (default 50) migratable example consumers (bare pods, each
// with its own topic at 2 msg/s), with --max-outbound-migrations-per-node=5.
// Reports the drain's wall time and the distribution of the migrations'
// downtime and total time; fails if any message is lost or processed
// twice live. Run: go test ./test/e2e -run '^$' -bench DrainNode -benchtime 1x
func BenchmarkDrainNode(b *testing.B) {
	c := cluster
	c.sandboxOnly(b, "reconfigures the manager")
	n := 50
	if s := os.Getenv("E2E_DRAIN_PODS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			b.Fatalf("E2E_DRAIN_PODS=%q: want a positive number", s)
		}
	}
	ctx := context.Background()
	if err := c.Sandbox.ReconfigureManager(ctx, func(o *manager.Options) {
		// All n pods are in one namespace: it may use every slot.
		o.MaxOutboundPerNode, o.MaxParallelMigrations, o.MaxParallelPerNamespace = 5, n, n
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = c.Sandbox.ReconfigureManager(context.Background(), func(o *manager.Options) {
			d := manager.DefaultOptions()
			o.MaxOutboundPerNode, o.MaxParallelMigrations, o.MaxParallelPerNamespace = d.MaxOutboundPerNode, d.MaxParallelMigrations, d.MaxParallelPerNamespace
		})
	})
	for range b.N {
		drainOnce(ctx, b, c, n)
	}
}

func drainOnce(ctx context.Context, b *testing.B, c *Cluster, n int) {
	ns := c.Namespace(b, "drainbench")
	nodes := c.restoreNodes(b)
	drained, producers := nodes[0], nodes[1]
	b.Cleanup(func() { _, _ = c.Kubectl(context.Background(), "uncordon", drained) })
	examples := make([]deploy.Example, n)
	deployed := make([]deploy.Deployed, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range examples {
		e := deploy.Example{Name: fmt.Sprintf("c%02d", i), Brokers: c.Brokers, Topic: fmt.Sprintf("%s-c%02d", ns, i),
			Rate: 2, Count: 60, ProcessTime: time.Millisecond, Bare: true, Node: drained, ProducerNode: producers}
		examples[i] = e
		// Not deployConsumer: b.Fatal must not be called from these goroutines.
		g.Go(func() error {
			d, err := deploy.DeployConsumer(gctx, c.Client, ns, e, func(string, ...any) {})
			if err != nil {
				return err
			}
			deployed[i] = d
			return deploy.StartProducer(gctx, c.Client, ns, e, func(string, ...any) {})
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	for _, d := range deployed {
		if err := deploy.WaitApplied(ctx, d, 4); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("%d migratable consumers under load on %s", n, drained)

	b.ResetTimer()
	start := time.Now()
	out, err := c.Kubectl(ctx, "drain", drained, "--ignore-daemonsets", "--force", "--timeout=600s")
	took := time.Since(start)
	b.StopTimer()
	if err != nil {
		b.Fatalf("kubectl drain: %v\n%s", err, out)
	}
	var list v1.StatefulMigrationList
	if err := c.CRClient(b).List(ctx, &list, client.InNamespace(ns)); err != nil {
		b.Fatal(err)
	}
	var downtimes, totals, pauses, handovers []time.Duration
	// Where each checkpoint pause went, as the agents timed their calls.
	steps := map[string][]time.Duration{}
	for _, m := range list.Items {
		if res, err := v1.AgentResultOf(&m, v1.AnnotationAgentCheckpoint); err == nil && res != nil && res.Steps != nil {
			steps["pause-call"] = append(steps["pause-call"], res.Steps.Pause.Duration)
			steps["kubelet"] = append(steps["kubelet"], res.Steps.Checkpoint.Duration)
			steps["resume-call"] = append(steps["resume-call"], res.Steps.Resume.Duration)
			steps["attempts"] = append(steps["attempts"], time.Duration(res.Steps.Attempts))
			for name, d := range map[string]*metav1.Duration{"sidecar-idle": res.Steps.SidecarIdle, "sidecar-offsets": res.Steps.SidecarOffsets, "sidecar-quiesce": res.Steps.SidecarQuiesce} {
				if d != nil {
					steps[name] = append(steps[name], d.Duration)
				}
			}
		}
		tr := m.Status.PhaseTransitions
		if m.Status.Phase != v1.PhaseCompleted || m.Status.Downtime == nil || len(tr) < 2 {
			b.Fatalf("migration %s: %s %s", m.Name, m.Status.Phase, m.Status.FailureReason)
		}
		downtimes = append(downtimes, m.Status.Downtime.Duration)
		if st := m.Status.Stalls; st != nil && st.CheckpointPause != nil && st.Handover != nil {
			pauses, handovers = append(pauses, st.CheckpointPause.Duration), append(handovers, st.Handover.Duration)
		}
		// From entering Pending (waiting for the per-node limit
		// included) to Completed.
		totals = append(totals, tr[len(tr)-1].EnteredTime.Sub(tr[0].EnteredTime.Time))
	}
	if len(list.Items) != n {
		b.Fatalf("%d migrations for %d migratable pods", len(list.Items), n)
	}
	for _, e := range examples {
		verifyZeroLoss(ctx, b, c, ns, e)
	}
	b.ReportMetric(took.Seconds(), "drain-s")
	for _, q := range []struct {
		name string
		p    float64
	}{{"p50", 0.5}, {"p90", 0.9}, {"max", 1}} {
		b.ReportMetric(ms(quantile(downtimes, q.p)), "downtime-"+q.name+"-ms")
		b.ReportMetric(quantile(totals, q.p).Seconds(), "migration-"+q.name+"-s")
		if len(pauses) > 0 {
			// Which stall grows when migrations run side by side.
			b.ReportMetric(ms(quantile(pauses, q.p)), "pause-"+q.name+"-ms")
			b.ReportMetric(ms(quantile(handovers, q.p)), "handover-"+q.name+"-ms")
		}
		for step, ds := range steps {
			if step == "attempts" {
				b.ReportMetric(float64(quantile(ds, q.p)), "checkpoint-attempts-"+q.name)
				continue
			}
			b.ReportMetric(ms(quantile(ds, q.p)), step+"-"+q.name+"-ms")
		}
	}
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	b.Logf("drain of %d migratable pods: %s; downtime p50 %s p90 %s max %s; per migration (Pending to Completed) p50 %s p90 %s max %s; zero loss in all",
		n, r(took), r(quantile(downtimes, .5)), r(quantile(downtimes, .9)), r(quantile(downtimes, 1)),
		r(quantile(totals, .5)), r(quantile(totals, .9)), r(quantile(totals, 1)))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// quantile is the nearest-rank quantile of ds.
func quantile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}
