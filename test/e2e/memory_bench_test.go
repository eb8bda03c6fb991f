package e2e

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/internal/example/deploy"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// BenchmarkMigrationByMemory: one migration of the example consumer
// holding 16, 64 and 256 MiB of resident memory (BALLAST_MIB), at 20 msg/s.
// The SIMULATED CRIU freezes the process and copies its resident pages
// (pkg/simcriu, DumpPages), so the checkpoint, the image and the restore
// grow with the memory as on a real node. Reports the Checkpointing phase
// (the source is paused through it), the Transferring and Restoring
// phases, the whole migration (Pending to Completed), the checkpoint
// image's size, the stalls and the container's freeze (the pause's
// floor); fails if a message is lost or processed twice live. Run:
// go test ./test/e2e -run '^$' -bench MigrationByMemory -benchtime 1x
func BenchmarkMigrationByMemory(b *testing.B) {
	c := cluster
	c.sandboxOnly(b, "measures the simulated CRIU's cost")
	ctx := context.Background()
	for _, mib := range []int{16, 64, 256} {
		b.Run(fmt.Sprintf("%dMiB", mib), func(b *testing.B) {
			for range b.N {
				migrateWithMemory(ctx, b, c, mib)
			}
		})
	}
}

func migrateWithMemory(ctx context.Context, b *testing.B, c *Cluster, mib int) {
	ns := c.Namespace(b, fmt.Sprintf("mem%d", mib))
	e := deploy.Example{Name: "orders", Brokers: c.Brokers, Topic: ns + "-orders", Rate: 20, Count: 300,
		ProcessTime: 2 * time.Millisecond, AppEnv: map[string]string{"BALLAST_MIB": strconv.Itoa(mib)}}
	d := deployConsumer(ctx, b, c, ns, e)
	if err := deploy.StartProducer(ctx, c.Client, ns, e, b.Logf); err != nil {
		b.Fatal(err)
	}
	if err := deploy.WaitApplied(ctx, d, 60); err != nil {
		b.Fatal(err)
	}
	cl := c.CRClient(b)
	m := &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: "move", Namespace: ns}, Spec: v1.StatefulMigrationSpec{SourcePod: d.Pod.Name}}
	b.ResetTimer()
	if err := cl.Create(ctx, m); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for !m.Status.Phase.IsTerminal() {
		if time.Now().After(deadline) {
			b.Fatalf("migration %s: still %s after 5m", m.Name, m.Status.Phase)
		}
		time.Sleep(50 * time.Millisecond) // polling the API server, with a deadline
		if err := cl.Get(ctx, client.ObjectKeyFromObject(m), m); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if m.Status.Phase != v1.PhaseCompleted {
		b.Fatalf("migration %s: %s %s", m.Name, m.Status.Phase, m.Status.FailureReason)
	}
	verifyZeroLoss(ctx, b, c, ns, e)
	entered := map[v1.Phase]time.Time{}
	tr := m.Status.PhaseTransitions
	for _, p := range tr {
		entered[p.Phase] = p.EnteredTime.Time
	}
	phase := func(p, next v1.Phase) time.Duration { return entered[next].Sub(entered[p]) }
	ckpt, transfer, restore := phase(v1.PhaseCheckpointing, v1.PhaseTransferring), phase(v1.PhaseTransferring, v1.PhaseRestoring), phase(v1.PhaseRestoring, v1.PhaseReplaying)
	total := tr[len(tr)-1].EnteredTime.Sub(tr[0].EnteredTime.Time)
	b.ReportMetric(ms(ckpt), "checkpointing-ms")
	b.ReportMetric(ms(transfer), "transferring-ms")
	b.ReportMetric(ms(restore), "restoring-ms")
	b.ReportMetric(total.Seconds(), "migration-s")
	b.ReportMetric(float64(m.Status.CheckpointSizeBytes)/(1<<20), "image-MiB")
	// The stalls, as the sidecars timed them: the checkpoint pause holds
	// the dump's freeze, which grows with memory; the handover should not.
	st := m.Status.Stalls
	if st == nil || st.CheckpointPause == nil || st.Handover == nil || m.Status.Downtime == nil {
		b.Fatalf("migration %s completed without its stalls: %+v", m.Name, st)
	}
	b.ReportMetric(ms(st.CheckpointPause.Duration), "pause-ms")
	b.ReportMetric(ms(st.Handover.Duration), "handover-ms")
	b.ReportMetric(ms(m.Status.Downtime.Duration), "downtime-ms")
	// The pause's floor: how long the runtime held the container, as the
	// agent saw its cgroup (it resumes the sidecar at the runtime's resume).
	frozen := "the freeze's end not seen"
	if ck, err := v1.AgentResultOf(m, v1.AnnotationAgentCheckpoint); err == nil && ck != nil && ck.Steps != nil && ck.Steps.ResumedAtThaw && ck.Steps.Frozen != nil {
		b.ReportMetric(ms(ck.Steps.Frozen.Duration), "frozen-ms")
		node := &corev1.Node{}
		if err := cl.Get(ctx, client.ObjectKey{Name: m.Status.SourceNode}, node); err != nil {
			b.Fatal(err)
		}
		frozen = fmt.Sprintf("the container frozen %s on %s (%s), the pause %s longer", v1.FormatDuration(ck.Steps.Frozen.Duration), node.Name,
			node.Labels[v1.LabelRuntime], v1.FormatDuration(st.CheckpointPause.Duration-ck.Steps.Frozen.Duration))
	}
	b.Logf("%d MiB: checkpointing %s, transferring %s, restoring %s, migration %s, image %.1f MiB (the layer as pushed); downtime %s (%s); %s; zero loss",
		mib, ckpt.Round(time.Millisecond), transfer.Round(time.Millisecond), restore.Round(time.Millisecond), total.Round(time.Millisecond),
		float64(m.Status.CheckpointSizeBytes)/(1<<20), v1.FormatDuration(m.Status.Downtime.Duration), st.Split(), frozen)
}
