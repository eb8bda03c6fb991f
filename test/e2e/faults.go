package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/ms2m/ms2m/internal/example/deploy"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/sandbox/kubelet"
)

// TargetCrashSpec: the target's app process is killed (SIGKILL) while it
// replays (the handover is held by a PodDisruptionBudget, so the crash
// lands in Replaying every time). The migration fails naming the crashed
// container, rolls back (target removed, the source — never fenced —
// serves on), and nothing is lost or processed twice live. Sandbox only:
// it kills the simulated node's process.
func TargetCrashSpec(in SpecInput) features.Feature {
	return feature("target crash during replay", "fails, rolls back, source serves, zero loss", func(ctx context.Context, t *testing.T) {
		in.Cluster.sandboxOnly(t, "kills a process of a simulated node")
		s := in.open(t, "crash")
		m, d := s.migrationHeldByBudget(ctx, "crash", in.Load.Count/4)
		target, err := s.Client.CoreV1().Pods(s.NS).Get(ctx, m.Status.TargetPod, metav1.GetOptions{})
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
		s.rolledBack(m, "", "container app of "+target.Name)
		waitPodGone(t, s.Cluster, s.NS, target.Name, "the target removed")
		s.sourceServedOn(ctx, d.Pod)
	})
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
func CheckpointFailureSpec(in SpecInput) features.Feature {
	return feature("checkpoint API error", "fails with the kubelet's reason, source resumed, zero loss", func(ctx context.Context, t *testing.T) {
		in.Cluster.sandboxOnly(t, "injects a fault into the simulated CRIU")
		s := in.open(t, "ckptfail", func(e *deploy.Example) {
			e.Annotations = map[string]string{kubelet.AnnotationFailCheckpoint: "dump failed: vDSO mismatch"}
		})
		src := s.deploy(ctx, in.Load.Count/4).Pod
		m := s.migrate(ctx, "ckpt", src.Name, v1.StatefulMigrationSpec{})
		s.rolledBack(m, v1.ReasonCheckpointFailed, "vDSO mismatch")
		s.sourceServedOn(ctx, src)
	})
}

// BrokerRestartSpec: the Kafka-protocol broker restarts (same address,
// same data) while a migration replays: the source's live member and the
// target's replay readers reconnect; the migration then completes and
// nothing is lost or processed twice live. Sandbox only: it restarts the
// sandbox's broker.
func BrokerRestartSpec(in SpecInput) features.Feature {
	return feature("broker restart during replay", "migration completes after the restart, zero loss", func(ctx context.Context, t *testing.T) {
		in.Cluster.sandboxOnly(t, "restarts the broker")
		s := in.open(t, "brokerrestart")
		m, _ := s.migrationHeldByBudget(ctx, "restart", in.Load.Count/4)
		// The producer is done first: this spec is about the consumers.
		if err := deploy.WaitProducer(ctx, s.Client, s.NS, s.Example); err != nil {
			t.Fatal(err)
		}
		if err := s.Sandbox.RestartBroker(); err != nil {
			t.Fatal(err)
		}
		t.Log("broker restarted while the target replays")
		s.allowDisruptions(ctx)
		got := s.completed(m)
		t.Logf("completed after the broker restart, downtime %s", got.Status.Downtime.Duration)
		s.verifyZeroLoss(ctx)
	})
}
