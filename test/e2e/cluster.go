// Package e2e holds the end-to-end specs: each spec is a function taking
// an input and returning an e2e-framework feature. Files are named by
// concern (migration_*, faults_*, drain_*, install_*, sandbox_*), each
// concern's thin Test functions in its own _test.go; spec.go is the
// opening the specs share. They run against the embedded sandbox (started
// by TestMain), or against the cluster of KUBECONFIG when E2E_CLUSTER=kubeconfig
// asks for it (README.md).
package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/e2e-framework/pkg/envconf"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/manager"
	"github.com/ms2m/ms2m/pkg/migrationclient"
	"github.com/ms2m/ms2m/pkg/sandbox"
)

// Image is the project image; its binaries are named by the command.
const Image = "ghcr.io/ms2m/ms2m:v0.1.0"

// Cluster is what the specs run against.
type Cluster struct {
	Kubeconfig string
	Config     *rest.Config
	Client     kubernetes.Interface
	// Registry receives checkpoint images; the sandbox's, or E2E_REGISTRY
	// on a real cluster.
	Registry string
	// KubeletCA verifies the kubelets' serving certificates; nil skips
	// verification (a real cluster's kubelets are often self-signed).
	KubeletCA []byte
	// Brokers is the Kafka bootstrap list: the sandbox's broker, or
	// E2E_BROKERS on a real cluster (required there).
	Brokers []string
	// Sandbox is nil on a real cluster.
	Sandbox *sandbox.Sandbox
	// BinDir holds the binaries the sandbox's pods run.
	BinDir string
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Setup starts the sandbox, or connects to KUBECONFIG's cluster when
// E2E_CLUSTER=kubeconfig asks for it. An exported KUBECONFIG alone (the
// sandbox's README has users export one) never switches the tier: a real
// cluster is used only when asked for, and then it must come with what the
// specs need (E2E_BROKERS), or Setup fails naming it.
func Setup(ctx context.Context, c *Cluster, workDir string) error {
	switch mode := os.Getenv("E2E_CLUSTER"); mode {
	case "", "sandbox":
		return setupSandbox(ctx, c, workDir)
	case "kubeconfig":
		return setupKubeconfig(c)
	default:
		return fmt.Errorf("E2E_CLUSTER=%q: want sandbox (the default) or kubeconfig", mode)
	}
}

func setupKubeconfig(c *Cluster) error {
	kc := os.Getenv("KUBECONFIG")
	if kc == "" {
		return errors.New("E2E_CLUSTER=kubeconfig needs KUBECONFIG naming the cluster's kubeconfig")
	}
	brokers := os.Getenv("E2E_BROKERS")
	if brokers == "" {
		return errors.New("E2E_CLUSTER=kubeconfig needs E2E_BROKERS, the Kafka bootstrap list (host:port,...) " +
			"the cluster's pods and this machine both reach: the migration specs deploy the example consumer on it")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		return err
	}
	c.Kubeconfig, c.Config, c.Registry, c.Brokers = kc, cfg, os.Getenv("E2E_REGISTRY"), strings.Split(brokers, ",")
	c.Client, err = kubernetes.NewForConfig(cfg)
	return err
}

func setupSandbox(ctx context.Context, c *Cluster, workDir string) error {
	bin := filepath.Join(workDir, "bin")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin+"/", "./cmd/...", "./examples/...")
	build.Dir = repoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building the binaries the sandbox runs: %v\n%s", err, out)
	}
	mgr := manager.DefaultOptions()
	sb, err := sandbox.Start(ctx, sandbox.Options{
		// Four nodes, one of which cannot restore checkpoints.
		Dir: filepath.Join(workDir, "sandbox"), ControlPlaneDir: sandbox.DefaultControlPlaneDir(), BinDir: bin, Nodes: 5, NodesWithoutRestore: 1,
		CRDDirs: []string{filepath.Join(repoRoot(), "charts", "ms2m", "crds")}, Log: sandboxLog(),
		Manager: &mgr, WebhookManifests: filepath.Join(repoRoot(), "config", "webhook"), RBACDir: filepath.Join(repoRoot(), "config", "rbac"),
	})
	if err != nil {
		return err
	}
	*c = sandboxCluster(sb, bin)
	return nil
}

// sandboxCluster is the Cluster of a running sandbox.
func sandboxCluster(sb *sandbox.Sandbox, bin string) Cluster {
	return Cluster{Sandbox: sb, Kubeconfig: sb.Kubeconfig, Config: sb.Config, Client: sb.Client, Registry: sb.Registry,
		KubeletCA: sb.KubeletCA, Brokers: []string{sb.Broker}, BinDir: bin}
}

// sandboxOnly skips a spec on a real cluster (E2E_CLUSTER=kubeconfig):
// what it does needs the sandbox (why says what).
func (c *Cluster) sandboxOnly(t testing.TB, why string) {
	t.Helper()
	if c.Sandbox == nil {
		t.Skipf("E2E_CLUSTER=kubeconfig: this spec %s, which only the sandbox allows", why)
	}
}

// CRClient is a controller-runtime client that knows StatefulMigrations.
func (c *Cluster) CRClient(t testing.TB) client.Client {
	t.Helper()
	cfg := rest.CopyConfig(c.Config)
	cfg.QPS, cfg.Burst = 200, 400 // specs poll migrations closely
	cl, err := client.New(cfg, client.Options{Scheme: migrationclient.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// sandboxLog shows a sandbox's log with E2E_SANDBOX_LOG set.
func sandboxLog() logr.Logger {
	return funcr.New(func(prefix, args string) {
		if os.Getenv("E2E_SANDBOX_LOG") != "" {
			fmt.Fprintln(os.Stderr, prefix, args)
		}
	}, funcr.Options{})
}

// Teardown stops the sandbox.
func (c *Cluster) Teardown() {
	if c.Sandbox != nil {
		c.Sandbox.Stop()
	}
}

// EnvConfig is the e2e-framework configuration for the cluster.
func (c *Cluster) EnvConfig() *envconf.Config { return envconf.NewWithKubeConfig(c.Kubeconfig) }

// Namespace creates a namespace for one spec and deletes it afterwards.
func (c *Cluster) Namespace(t testing.TB, name string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: name + "-"}}
	ns, err := c.Client.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Wait until it is gone, pods and all, so the next spec starts clean.
		_ = c.Client.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
		c.Eventually(t, "namespace "+ns.Name+" deleted", func(ctx context.Context) error {
			_, err := c.Client.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there (%v)", err)
		})
	})
	// The namespace's default service account comes from the real
	// controller-manager; pods cannot be admitted before it exists.
	c.Eventually(t, "service account default/"+ns.Name, func(ctx context.Context) error {
		_, err := c.Client.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	return ns.Name
}

// Eventually polls fn until it returns nil, failing the test with the last
// error after two minutes.
func (c *Cluster) Eventually(t testing.TB, what string, fn func(ctx context.Context) error) {
	t.Helper()
	if err := c.poll(fn); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// EventuallyIn is Eventually that, when it gives up, also logs what the
// namespace holds: pods with their nodes and states, and its Events.
func (c *Cluster) EventuallyIn(t testing.TB, ns, what string, fn func(ctx context.Context) error) {
	t.Helper()
	if err := c.poll(fn); err != nil {
		t.Log(c.Describe(ns))
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// poll calls fn until it returns nil, for two minutes, and returns the last
// error fn gave. Each call gets its own timeout, so the overall deadline
// never replaces the real reason with a cancelled request.
func (c *Cluster) poll(fn func(ctx context.Context) error) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := fn(ctx)
		cancel()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond) // polling interval
	}
}

// Describe summarises a namespace for a failure message: its pods (node,
// phase, readiness, container states) and its Events, oldest first.
func (c *Cluster) Describe(ns string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var b strings.Builder
	fmt.Fprintf(&b, "namespace %s:\n", ns)
	if pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err != nil {
		fmt.Fprintf(&b, "  pods: %v\n", err)
	} else {
		for _, p := range pods.Items {
			fmt.Fprintf(&b, "  pod %s node=%q phase=%s ready=%v deleting=%v\n", p.Name, p.Spec.NodeName, p.Status.Phase, IsReady(&p), p.DeletionTimestamp != nil)
			for _, s := range p.Status.ContainerStatuses {
				fmt.Fprintf(&b, "    %s restarts=%d state=%+v\n", s.Name, s.RestartCount, s.State)
			}
		}
	}
	if evs, err := c.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{}); err != nil {
		fmt.Fprintf(&b, "  events: %v\n", err)
	} else {
		for _, e := range evs.Items {
			fmt.Fprintf(&b, "  event %s %s/%s %s: %s\n", e.Type, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
		}
	}
	return b.String()
}

// Kubectl runs the machine's kubectl against the cluster.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// PodsReady returns an error naming the first pod matching selector in ns
// that is not Running and Ready, or when fewer than n exist.
func (c *Cluster) PodsReady(ctx context.Context, ns, selector string, n int) ([]corev1.Pod, error) {
	pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err
	}
	var live []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		if !IsReady(&p) {
			return nil, fmt.Errorf("pod %s is %s, not Ready (%s)", p.Name, p.Status.Phase, waitingReason(&p))
		}
		live = append(live, p)
	}
	if len(live) < n {
		return nil, fmt.Errorf("%d of %d pods %s ready", len(live), n, selector)
	}
	return live, nil
}

// IsReady reports the pod's Ready condition.
func IsReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue && p.Status.Phase == corev1.PodRunning
		}
	}
	return false
}

func waitingReason(p *corev1.Pod) string {
	for _, s := range p.Status.ContainerStatuses {
		if s.State.Waiting != nil {
			return s.Name + ": " + s.State.Waiting.Reason + " " + s.State.Waiting.Message
		}
	}
	return "no waiting container"
}

// restoreNodes are the Ready nodes that can restore checkpoints.
func (c *Cluster) restoreNodes(t testing.TB) []string {
	t.Helper()
	out := c.schedulableNodes(t, v1.LabelCheckpointRestore+"=true")
	if len(out) < 2 {
		t.Fatalf("need two Ready nodes that can restore checkpoints, have %v", out)
	}
	return out
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// schedulableNodes are the Ready, uncordoned nodes that selector selects.
func (c *Cluster) schedulableNodes(t testing.TB, selector string) []string {
	t.Helper()
	nodes, err := c.Client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range nodes.Items {
		if nodeReady(&n) && !n.Spec.Unschedulable {
			out = append(out, n.Name)
		}
	}
	return out
}

// otherNode is a Ready, schedulable node other than not.
func (c *Cluster) otherNode(ctx context.Context, t testing.TB, not string) string {
	t.Helper()
	nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Items {
		if n.Name != not && !n.Spec.Unschedulable && nodeReady(&n) {
			return n.Name
		}
	}
	t.Fatalf("no Ready node other than %s", not)
	return ""
}
