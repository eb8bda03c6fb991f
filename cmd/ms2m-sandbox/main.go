// Command ms2m-sandbox runs a whole Kubernetes cluster on this machine — the
// real control plane, a Kafka-protocol broker, an OCI registry and simulated
// nodes with a SIMULATED CRIU — so ms2m can be tried and tested without a
// cluster or a container engine. See `ms2m-sandbox --help`.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ms2m/ms2m/pkg/manager"
	"github.com/ms2m/ms2m/pkg/sandbox"
)

const usage = `ms2m-sandbox: a Kubernetes cluster on one machine for ms2m.

Real etcd, kube-apiserver, kube-controller-manager and kube-scheduler; a
Kafka-protocol broker (kfake); an OCI registry; simulated nodes whose pods
run the project's binaries as local processes and whose checkpoint/restore
is a SIMULATED CRIU (CRIU cannot run here).

Usage:
  ms2m-sandbox up     [flags]   start in the background; prints how to reach it
  ms2m-sandbox run    [flags]   run in the foreground until interrupted
  ms2m-sandbox demo   [flags]   deploy the example workload with a producer and
                                verify zero loss (on the running sandbox, or one
                                it starts and stops)
  ms2m-sandbox status [--dir]   show what is running
  ms2m-sandbox down   [--dir] [--purge]
                                stop everything (and with --purge delete the state)

Flags:
`

func main() {
	sandbox.RunManagerChild()
	if len(os.Args) < 2 || strings.HasPrefix(os.Args[1], "-") {
		fmt.Fprint(os.Stderr, usage)
		newFlags("up").PrintDefaults()
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	fs := newFlags(cmd)
	if err := fs.Parse(args); err != nil {
		os.Exit(2)
	}
	var err error
	switch cmd {
	case "up":
		err = up(fs)
	case "run":
		err = run(fs)
	case "down":
		err = down(flagString(fs, "dir"), flagBool(fs, "purge"))
	case "demo":
		err = demo(fs)
	case "status":
		err = status(flagString(fs, "dir"))
	default:
		err = fmt.Errorf("unknown command %q (want up, run, status or down)", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ms2m-sandbox:", err)
		os.Exit(1)
	}
}

func defaultDir() string {
	if d := os.Getenv("MS2M_SANDBOX_HOME"); d != "" {
		return d
	}
	state := os.Getenv("XDG_STATE_HOME")
	if state == "" {
		home, _ := os.UserHomeDir()
		state = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(state, "ms2m", "sandbox")
}

func defaultBinDir() string {
	exe, err := os.Executable()
	if err != nil {
		return "bin"
	}
	return filepath.Dir(exe)
}

func newFlags(cmd string) *flag.FlagSet {
	fs := flag.NewFlagSet("ms2m-sandbox "+cmd, flag.ContinueOnError)
	fs.String("dir", defaultDir(), "State directory: etcd data, certificates, kubeconfig, logs, registry blobs, pods (env MS2M_SANDBOX_HOME).")
	fs.Int("nodes", 3, "Number of simulated nodes.")
	fs.Int("nodes-without-restore", 0, "How many of the nodes (the last ones) cannot restore checkpoints.")
	fs.String("control-plane-dir", sandbox.DefaultControlPlaneDir(), "Directory with etcd, kube-apiserver, kube-controller-manager, kube-scheduler (make control-plane).")
	fs.String("bin-dir", defaultBinDir(), "Directory with the project's binaries that pods of ghcr.io/ms2m/ms2m run (make build).")
	fs.String("crds", "charts/ms2m/crds", "Directory of CRDs to install; empty for none.")
	fs.Bool("purge", false, "down: also delete the state directory.")
	fs.Bool("keep", false, "demo: keep the sandbox it started running afterwards, until Ctrl-C.")
	fs.Bool("verbose", false, "demo: show the sandbox's log.")
	fs.Float64("rate", 20, "demo: producer messages per second.")
	fs.Int("count", 300, "demo: messages the producer writes.")
	fs.Int("replicas", 3, "demo: replicas of the consumer, one consumer group (a topic of two partitions per replica); one of them is migrated.")
	fs.Duration("process-time", 5*time.Millisecond, "demo: consumer time per message.")
	fs.Duration("kafka-initial-rebalance-delay", 3*time.Second, "The broker's group.initial.rebalance.delay.ms: the first rebalance of an empty consumer group waits this long, as on Apache Kafka (3s is its default; a negative value: none).")
	fs.Bool("manager", true, "Run the ms2m manager (webhooks, controllers) inside the sandbox.")
	fs.String("webhook-manifests", "config/webhook", "Directory of the webhook configurations the manager serves.")
	fs.String("rbac-dir", "config/rbac", "Directory of the generated ClusterRoles the manager and the agent run under.")
	return fs
}

func flagString(fs *flag.FlagSet, name string) string { return fs.Lookup(name).Value.String() }
func flagBool(fs *flag.FlagSet, name string) bool     { return fs.Lookup(name).Value.String() == "true" }
func flagInt(fs *flag.FlagSet, name string) int {
	var n int
	_, _ = fmt.Sscan(fs.Lookup(name).Value.String(), &n)
	return n
}

// running returns the PID of the sandbox running in dir, or 0.
func running(dir string) int {
	st, err := sandbox.ReadState(dir)
	if err != nil || st.PID == 0 || syscall.Kill(st.PID, 0) != nil {
		return 0
	}
	return st.PID
}

func run(fs *flag.FlagSet) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	opts, err := sandboxOptions(fs)
	if err != nil {
		return err
	}
	sb, err := sandbox.Start(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "sandbox ready: export KUBECONFIG=%s\n", sb.Kubeconfig)
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "stopping the sandbox")
	sb.Stop()
	return nil
}

func up(fs *flag.FlagSet) error {
	dir := flagString(fs, "dir")
	if pid := running(dir); pid != 0 {
		return fmt.Errorf("a sandbox is already running in %s (pid %d); stop it with `ms2m-sandbox down --dir %s`", dir, pid, dir)
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
		return err
	}
	logPath := filepath.Join(dir, "logs", "sandbox.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer func() { _ = logf.Close() }()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"run"}
	fs.Visit(func(f *flag.Flag) { args = append(args, "--"+f.Name+"="+f.Value.String()) })
	args = append(args, "--dir="+dir, "--bin-dir="+flagString(fs, "bin-dir"), "--control-plane-dir="+flagString(fs, "control-plane-dir"))
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // outlives this command
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fmt.Printf("starting the sandbox in %s (log: %s) ...\n", dir, logPath)
	deadline := time.After(5 * time.Minute)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("the sandbox stopped during start-up (%v); last lines of %s:\n%s", err, logPath, tail(logPath, 15))
		case <-deadline:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			return fmt.Errorf("the sandbox did not come up within 5 minutes; see %s", logPath)
		case <-tick.C:
		}
		if st, err := sandbox.ReadState(dir); err == nil && st.PID == cmd.Process.Pid {
			printState(st)
			fmt.Printf("\nexport KUBECONFIG=%s\nkubectl get nodes,pods -A\n\nStop it with: ms2m-sandbox down --dir %s\n", st.Kubeconfig, dir)
			return nil
		}
	}
}

func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

func printState(st sandbox.State) {
	fmt.Printf("sandbox running (pid %d) since %s\n", st.PID, st.StartedAt.Local().Format(time.DateTime))
	fmt.Printf("  kube-apiserver  %s\n  kubeconfig      %s\n  kafka broker    %s\n  OCI registry    %s\n  kubelet CA      %s\n",
		st.APIServer, st.Kubeconfig, st.Broker, st.Registry, st.KubeletCA)
	for _, n := range st.Nodes {
		fmt.Printf("  node %-10s kubelet API https://%s  pods %s\n", n.Name, n.Kubelet, n.PodDir)
	}
}

func status(dir string) error {
	pid := running(dir)
	if pid == 0 {
		fmt.Printf("no sandbox running in %s\n", dir)
		return nil
	}
	st, err := sandbox.ReadState(dir)
	if err != nil {
		return err
	}
	printState(st)
	cfg, err := clientcmd.BuildConfigFromFlags("", st.Kubeconfig)
	if err != nil {
		return err
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("the API server does not answer: %w", err)
	}
	ready := 0
	for _, n := range nodes.Items {
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				ready++
			}
		}
	}
	pods, err := c.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	byPhase := map[corev1.PodPhase]int{}
	for _, p := range pods.Items {
		byPhase[p.Status.Phase]++
	}
	fmt.Printf("  nodes Ready %d/%d; pods %v\n", ready, len(nodes.Items), byPhase)
	return nil
}

func down(dir string, purge bool) error {
	pid := running(dir)
	if pid != 0 {
		fmt.Printf("stopping the sandbox (pid %d) ...\n", pid)
		_ = syscall.Kill(pid, syscall.SIGTERM)
		deadline := time.Now().Add(60 * time.Second)
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond) // waiting for another process to exit: no event to watch
		}
		if syscall.Kill(pid, 0) == nil {
			fmt.Println("it did not stop within 60s; killing it")
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if killed := sandbox.Reap(dir); len(killed) > 0 {
		fmt.Printf("stopped %d processes left behind\n", len(killed))
	}
	_ = os.Remove(sandbox.StateFile(dir))
	if purge {
		if err := os.RemoveAll(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		fmt.Printf("deleted %s\n", dir)
	}
	if pid == 0 {
		fmt.Printf("no sandbox was running in %s\n", dir)
	} else {
		fmt.Println("sandbox stopped")
	}
	return nil
}

// sandboxOptions turns the flags into sandbox options, after refusing to
// start over a running sandbox and stopping strays of a crashed one.
func sandboxOptions(fs *flag.FlagSet) (sandbox.Options, error) {
	dir := flagString(fs, "dir")
	if pid := running(dir); pid != 0 {
		return sandbox.Options{}, fmt.Errorf("a sandbox is already running in %s (pid %d); stop it with `ms2m-sandbox down --dir %s`", dir, pid, dir)
	}
	if killed := sandbox.Reap(dir); len(killed) > 0 {
		fmt.Fprintf(os.Stderr, "stopped %d processes left behind by an earlier sandbox in %s\n", len(killed), dir)
	}
	var crds []string
	if d := flagString(fs, "crds"); d != "" {
		if _, err := os.Stat(d); err != nil {
			return sandbox.Options{}, fmt.Errorf("--crds %s: %w", d, err)
		}
		crds = []string{d}
	}
	var mgr *manager.Options
	if flagBool(fs, "manager") {
		opts := manager.DefaultOptions()
		mgr = &opts
	}
	log := funcr.New(func(prefix, args string) {
		if flagBool(fs, "verbose") || fs.Name() == "ms2m-sandbox run" {
			fmt.Fprintf(os.Stderr, "%s %s %s\n", time.Now().Format("15:04:05.000"), prefix, args)
		}
	}, funcr.Options{})
	return sandbox.Options{
		Dir: dir, ControlPlaneDir: flagString(fs, "control-plane-dir"), BinDir: flagString(fs, "bin-dir"),
		Nodes: flagInt(fs, "nodes"), NodesWithoutRestore: flagInt(fs, "nodes-without-restore"), CRDDirs: crds,
		Log: log.WithName("sandbox"), Manager: mgr, WebhookManifests: flagString(fs, "webhook-manifests"),
		RBACDir: flagString(fs, "rbac-dir"), KafkaInitialRebalanceDelay: flagDuration(fs, "kafka-initial-rebalance-delay"),
	}, nil
}
