package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/ms2m/ms2m/internal/example/deploy"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/sandbox/kubelet"
)

// FaultUnderLoadInput configures the specs that inject a fault into a
// migration of the example under a steady producer: TargetCrashSpec,
// CheckpointFailureSpec, BrokerRestartSpec, TargetNodeNotReadySpec.
type FaultUnderLoadInput struct {
	Cluster *Cluster
	Rate    float64
	Count   int64
}

// TargetCrashSpec: the target's app process is killed (SIGKILL) while it
// replays (the handover is held by a PodDisruptionBudget, so the crash
// lands in Replaying every time). The migration fails naming the crashed container,
// rolls back (target removed, the source — never fenced — serves on), and
// nothing is lost or processed twice live. Sandbox only: it kills the
// simulated node's process.
func TargetCrashSpec(in FaultUnderLoadInput) features.Feature {
	return features.New("target crash during replay").
		Assess("fails, rolls back, source serves, zero loss", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			c := in.Cluster
			if c.Sandbox == nil {
				t.Skip("kills a process of the sandbox's simulated node")
			}
			ns := c.Namespace(t, "crash")
			e := deploy.Example{Name: "orders", Brokers: c.Brokers, Topic: ns + "-orders", Rate: in.Rate, Count: in.Count, ProcessTime: 2 * time.Millisecond}
			m, d, cl := migrationHeldByBudget(ctx, t, c, ns, e, "crash", in.Count/4)
			src := d.Pod
			target, err := c.Client.CoreV1().Pods(ns).Get(ctx, m.Status.TargetPod, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			pid, err := processOf("example-consumer", "POD_IP="+target.Status.PodIP)
			if err != nil {
				t.Fatal(err)
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			t.Logf("killed the target's app (pid %d) while replaying", pid)

			got := waitFinished(t, c, cl, m)
			rolled := meta.FindStatusCondition(got.Status.Conditions, v1.ConditionRolledBack)
			if got.Status.Phase != v1.PhaseFailed || !strings.Contains(got.Status.FailureReason, "container app of "+target.Name) || rolled == nil || rolled.Message != "the source serves again" {
				t.Fatalf("phase %s, reason %q, rolled back %+v", got.Status.Phase, got.Status.FailureReason, rolled)
			}
			t.Logf("migration failed as it should: %s; %s", got.Status.FailureReason, rolled.Message)
			waitPodGone(t, c, ns, target.Name, "the target removed")
			sourceServedOn(ctx, t, c, ns, e, src)
			return ctx
		}).Feature()
}

// sourceServedOn checks zero loss (verifyZeroLoss) and that the consumer
// serving now is src itself: a failed migration left the source serving.
func sourceServedOn(ctx context.Context, t *testing.T, c *Cluster, ns string, e deploy.Example, src *corev1.Pod) {
	t.Helper()
	if after := verifyZeroLoss(ctx, t, c, ns, e); after.Pod.UID != src.UID {
		t.Fatalf("the consumer is %s, want the source %s serving on", after.Pod.Name, src.Name)
	}
}

// processOf finds the process whose command line contains binary and
// whose environment holds env (KEY=VALUE).
func processOf(binary, env string) (int, error) {
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return 0, err
	}
	for _, d := range dirs {
		cmd, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || !bytes.Contains(cmd, []byte(binary)) {
			continue
		}
		environ, err := os.ReadFile(filepath.Join(d, "environ"))
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(environ, []byte{0}) {
			if string(kv) == env {
				return strconv.Atoi(filepath.Base(d))
			}
		}
	}
	return 0, fmt.Errorf("no %s process with %s", binary, env)
}

// CheckpointFailureSpec: the kubelet's checkpoint API fails (a SIMULATED
// CRIU fault injected by a pod annotation): the migration fails with
// CheckpointFailed carrying the kubelet's answer, the source — paused for
// the checkpoint — is resumed and serves on, and nothing is lost.
func CheckpointFailureSpec(in FaultUnderLoadInput) features.Feature {
	return features.New("checkpoint API error").
		Assess("fails with the kubelet's reason, source resumed, zero loss", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			c := in.Cluster
			if c.Sandbox == nil {
				t.Skip("injects a fault into the sandbox's simulated CRIU")
			}
			ns := c.Namespace(t, "ckptfail")
			e := deploy.Example{Name: "orders", Brokers: c.Brokers, Topic: ns + "-orders", Rate: in.Rate, Count: in.Count, ProcessTime: 2 * time.Millisecond,
				Annotations: map[string]string{kubelet.AnnotationFailCheckpoint: "dump failed: vDSO mismatch"}}
			src := deployExample(ctx, t, c, ns, e, in.Count/4).Pod
			cl := c.CRClient(t)
			m := &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: "ckpt", Namespace: ns}, Spec: v1.StatefulMigrationSpec{SourcePod: src.Name}}
			if err := cl.Create(ctx, m); err != nil {
				t.Fatal(err)
			}
			got := waitFinished(t, c, cl, m)
			rolled := meta.FindStatusCondition(got.Status.Conditions, v1.ConditionRolledBack)
			if got.Status.Phase != v1.PhaseFailed || rolled == nil || rolled.Reason != v1.ReasonCheckpointFailed ||
				!strings.Contains(got.Status.FailureReason, "vDSO mismatch") || rolled.Message != "the source serves again" {
				t.Fatalf("phase %s, reason %q, rolled back %+v", got.Status.Phase, got.Status.FailureReason, rolled)
			}
			t.Logf("migration failed as it should: %s; %s", got.Status.FailureReason, rolled.Message)
			sourceServedOn(ctx, t, c, ns, e, src)
			return ctx
		}).Feature()
}

// BrokerRestartSpec: the Kafka-protocol broker restarts (same address,
// same data) while a migration replays: the source's live member and the
// target's replay readers reconnect; the migration then completes and
// nothing is lost or processed twice live. Sandbox only: it restarts the
// sandbox's broker.
func BrokerRestartSpec(in FaultUnderLoadInput) features.Feature {
	return features.New("broker restart during replay").
		Assess("migration completes after the restart, zero loss", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			c := in.Cluster
			if c.Sandbox == nil {
				t.Skip("restarts the sandbox's broker")
			}
			ns := c.Namespace(t, "brokerrestart")
			e := deploy.Example{Name: "orders", Brokers: c.Brokers, Topic: ns + "-orders", Rate: in.Rate, Count: in.Count, ProcessTime: 2 * time.Millisecond}
			m, _, cl := migrationHeldByBudget(ctx, t, c, ns, e, "restart", in.Count/4)
			// The producer is done first: this spec is about the consumers.
			if err := deploy.WaitProducer(ctx, c.Client, ns, e); err != nil {
				t.Fatal(err)
			}
			if err := c.Sandbox.RestartBroker(); err != nil {
				t.Fatal(err)
			}
			t.Log("broker restarted while the target replays")
			allowDisruptions(ctx, t, c, ns)
			got := waitFinished(t, c, cl, m)
			if got.Status.Phase != v1.PhaseCompleted {
				t.Log(c.Describe(ns))
				t.Fatalf("migration %s: %s", got.Status.Phase, got.Status.FailureReason)
			}
			t.Logf("completed after the broker restart, downtime %s", got.Status.Downtime.Duration)
			verifyZeroLoss(ctx, t, c, ns, e)
			return ctx
		}).Feature()
}
