package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/ms2m/ms2m/internal/example/deploy"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/replay"
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
		pid := killIn(t, "example-consumer", target.Status.PodIP)
		t.Logf("killed the target's app (pid %d) while replaying", pid)
		s.rolledBack(m, "", "container app of "+target.Name)
		waitPodGone(t, s.Cluster, s.NS, target.Name, "the target removed")
		s.sourceServedOn(ctx, d.Pod)
	})
}

// SidecarRestartSpec: the restored pod's sidecar is SIGKILLed after the
// handover, under load. The kubelet (here the simulated one, which reads
// the downward API again at every container start, as the kubelet does)
// restarts it with MS2M_MODE=live from the pod's
// migration.ms2m.io/sidecar-mode annotation, and it consumes live from the
// group's committed offsets. Without that record it came back replaying
// from the checkpoint offsets and waited for a handover that had already
// happened, and the group had no live member. Zero loss.
func SidecarRestartSpec(in SpecInput) features.Feature {
	return feature("a restored sidecar killed after the handover", "restarts live and consumes on; zero loss", func(ctx context.Context, t *testing.T) {
		in.Cluster.sandboxOnly(t, "kills a process of a simulated node")
		s := in.open(t, "sidecarkill")
		target := s.migratedUnderLoad(ctx, in.Load.Count/4)
		if mode := target.Annotations[v1.AnnotationSidecarMode]; mode != v1.SidecarModeLive {
			t.Fatalf("restored pod %s: sidecar mode %q; want %q", target.Name, mode, v1.SidecarModeLive)
		}
		ip := target.Status.PodIP
		pid := killIn(t, "ms2m-replay", ip)
		t.Logf("killed the restored sidecar (pid %d) after the handover", pid)
		s.EventuallyIn(t, s.NS, "the restored sidecar restarted, live", func(ctx context.Context) error {
			p, err := s.Client.CoreV1().Pods(s.NS).Get(ctx, target.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, st := range p.Status.ContainerStatuses {
				if st.Name == v1.SidecarContainerName && (st.RestartCount < 1 || !st.Ready) {
					return fmt.Errorf("sidecar restarts %d, ready %v", st.RestartCount, st.Ready)
				}
			}
			mode, err := sidecarMode(ctx, ip)
			if err != nil {
				return err
			}
			if mode != replay.ModeLive {
				return fmt.Errorf("sidecar mode %s", mode)
			}
			return nil
		})
		s.verifyZeroLoss(ctx)
	})
}

// AppRestartSpec: the restored pod's app is SIGKILLed after the handover,
// under load. The runtime creates it again from its image, the checkpoint
// (the sandbox restores it again, as CRI-O and containerd do for any
// container whose image is a checkpoint), so it is back at the checkpoint's
// offsets while the group has committed far past them. The app says so
// (409, Ms2m-Next-Offset), the sidecar gives it the messages it lost as
// replay, and then goes on live: the state is exact, nothing is lost and
// no effect is emitted twice.
func AppRestartSpec(in SpecInput) features.Feature {
	return feature("a restored app killed after the handover", "comes back at the checkpoint, is given what it lost as replay; zero loss", func(ctx context.Context, t *testing.T) {
		in.Cluster.sandboxOnly(t, "kills a process of a simulated node")
		s := in.open(t, "appkill")
		target := s.migratedUnderLoad(ctx, in.Load.Count/4)
		ip := target.Status.PodIP
		pid := killIn(t, "example-consumer", ip)
		t.Logf("killed the restored app (pid %d) after the handover", pid)
		restored := deploy.Deployed{Pod: target}
		s.EventuallyIn(t, s.NS, "the app restarted from the checkpoint and was given what it lost", func(ctx context.Context) error {
			p, err := s.Client.CoreV1().Pods(s.NS).Get(ctx, target.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, st := range p.Status.ContainerStatuses {
				if st.Name == "app" && (st.RestartCount < 1 || !st.Ready) {
					return fmt.Errorf("app restarts %d, ready %v", st.RestartCount, st.Ready)
				}
			}
			sc, err := restored.Sidecar(ctx)
			if err != nil {
				return err
			}
			if sc.Rewinds < 1 || sc.Mode != string(replay.ModeLive) {
				return fmt.Errorf("sidecar %s, %d rewinds", sc.Mode, sc.Rewinds)
			}
			return nil
		})
		s.verifyZeroLoss(ctx)
	})
}

// migratedUnderLoad deploys the consumer, migrates it once applied messages
// were processed, and returns the restored pod.
func (s *Spec) migratedUnderLoad(ctx context.Context, applied int64) *corev1.Pod {
	s.t.Helper()
	d := s.deploy(ctx, applied)
	got := s.completed(s.migrate(ctx, "move", d.Pod.Name, v1.StatefulMigrationSpec{}))
	target, err := s.Client.CoreV1().Pods(s.NS).Get(ctx, got.Status.TargetPod, metav1.GetOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	return target
}

// sidecarMode reads a sidecar's mode from its metrics endpoint
// (ms2m_replay_mode is 1 for the current mode).
func sidecarMode(ctx context.Context, podIP string) (replay.Mode, error) {
	s, err := deploy.ReadSidecar(ctx, net.JoinHostPort(podIP, "9902"))
	return replay.Mode(s.Mode), err
}

// killIn SIGKILLs the process of binary running in the pod whose IP is
// podIP (a simulated container: its environment names the IP), as a crash
// or the OOM killer would, and returns its pid.
func killIn(t *testing.T, binary, podIP string) int {
	t.Helper()
	pid, err := processOf(binary, "POD_IP="+podIP)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	return pid
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

// TCPConnectionSpec: an app that keeps a TCP connection open across the
// checkpoint (against the app contract) is refused by the SIMULATED CRIU
// as real CRIU refuses it under CRI-O's and containerd's defaults: the
// migration fails with CRIU's reason and what to change, and the source
// serves on. Once the nodes' CRIU configuration has tcp-close, the same
// pod migrates (its connection restored closed) with zero loss. The
// sidecar's own connections to the app never cause a refusal: every other
// spec's migration is checked by the same simulated CRIU.
func TCPConnectionSpec(in SpecInput) features.Feature {
	return feature("app holding a TCP connection", "refused with the cause and the fix, source serving; migrates with tcp-close; zero loss", func(ctx context.Context, t *testing.T) {
		in.Cluster.sandboxOnly(t, "writes the simulated nodes' CRIU configuration")
		s := in.open(t, "tcpconn", func(e *deploy.Example) {
			e.AppEnv = map[string]string{"HOLD_IDLE_CONNECTION": "true"}
		})
		src := s.deploy(ctx, in.Load.Count/6).Pod
		m := s.migrate(ctx, "refused", src.Name, v1.StatefulMigrationSpec{})
		got := s.rolledBack(m, v1.ReasonCheckpointFailed, "Connected TCP socket")
		for _, fix := range []string{"ms2m.io/app-quiesce-path", "tcp-close"} {
			if !strings.Contains(got.Status.FailureReason, fix) {
				t.Errorf("the failure does not say what to change (%q): %s", fix, got.Status.FailureReason)
			}
		}

		nodes := s.Sandbox.Fleet.Nodes()
		for _, n := range nodes {
			if err := s.Sandbox.SetCRIUConfig(n, "# restore connections closed\ntcp-close\n"); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() {
			for _, n := range nodes {
				_ = s.Sandbox.SetCRIUConfig(n, "")
			}
		})
		s.completed(s.migrate(ctx, "allowed", src.Name, v1.StatefulMigrationSpec{}))
		s.verifyZeroLoss(ctx)
	})
}
