package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/e2e-framework/pkg/features"
	"sigs.k8s.io/yaml"

	ms2menv "github.com/ms2m/ms2m/internal/testenv"
	"github.com/ms2m/ms2m/pkg/sandbox"
)

// helmRelease is the release the Helm specs install, into helmNamespace.
const (
	helmRelease   = "ms2m"
	helmNamespace = "ms2m-system"
)

// HelmSandbox starts a sandbox of its own without the embedded manager and
// installs ms2m into it with the Helm chart and the real helm CLI, as a
// user installs it on a cluster (docs/install.md):
//
//   - `helm install --wait` with values for the sandbox: its registry, the
//     simulated kubelets' CA and checkpoint directory, no host paths (the
//     simulated runtime needs none);
//   - the kube-scheduler configured with the chart's extender stanza
//     (ConfigMap <release>-kube-scheduler-config) and the CA of the
//     chart's certificate.
//
// The manager and the agents then run as the chart's pods, under its
// ServiceAccounts and RBAC, so a missing permission fails the specs run on
// the returned cluster; the API server reaches the webhooks and the
// scheduler the extender through the chart's Services (the sandbox's
// simulated kube-proxy). The sandbox stops when the test ends.
func HelmSandbox(ctx context.Context, t *testing.T, from *Cluster) *Cluster {
	t.Helper()
	from.sandboxOnly(t, "installs into a sandbox of its own (on a real cluster follow docs/install.md)")
	dir, err := os.MkdirTemp("", "ms2m-helm-")
	if err != nil {
		t.Fatal(err)
	}
	sb, err := sandbox.Start(ctx, sandbox.Options{
		Dir: dir, ControlPlaneDir: sandbox.DefaultControlPlaneDir(), BinDir: from.BinDir,
		Nodes: 3, NodesWithoutRestore: 1, Log: sandboxLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	cl := sandboxCluster(sb, from.BinDir)
	c := &cl
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("helm sandbox: state and logs kept in %s\n%s", dir, c.Describe(helmNamespace))
			sb.Stop()
			return
		}
		sb.Stop()
		_ = os.RemoveAll(dir)
	})

	values, err := yaml.Marshal(map[string]any{
		"checkpointImageRepository": sb.Registry + "/checkpoints",
		"agent": map[string]any{
			// The simulated kubelets' archives and serving CA live in the
			// sandbox's directory, which its pods share with the host:
			// mounted whole, but each node's kubelet writes its own
			// directory of it, where a real node's is the same path on
			// every node (the kubelet expands $(NODE_NAME) in args).
			"checkpointDir": filepath.Join(dir, "nodes"),
			"extraArgs":     []string{"--checkpoint-dir=" + filepath.Join(dir, "nodes", "$(NODE_NAME)", "checkpoints")},
			// The sandbox's registry is on loopback, without TLS.
			"plainHTTPRegistries": []string{sb.Registry},
			"hostPaths":           []string{},
			"kubelet":             map[string]any{"caFile": filepath.Join(dir, "pki", "kubelet-ca.crt")},
		},
		"manager": map[string]any{"log": map[string]any{"encoder": "console"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	valuesFile := filepath.Join(dir, "values.yaml")
	if err := os.WriteFile(valuesFile, values, 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, err := ms2menv.Helm(ctx, t.TempDir(), "install", helmRelease, filepath.Join(repoRoot(), "charts", "ms2m"),
		"--namespace", helmNamespace, "--create-namespace", "--kubeconfig", sb.Kubeconfig,
		"-f", valuesFile, "--wait", "--timeout", "5m")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("helm install --wait took %s:\n%s", time.Since(start).Round(time.Millisecond), firstLines(out, 6))

	if err := configureSchedulerFromChart(ctx, sb); err != nil {
		t.Fatal(err)
	}
	return c
}

// configureSchedulerFromChart gives the sandbox's kube-scheduler the
// extender stanza the chart rendered, trusting the chart's CA.
func configureSchedulerFromChart(ctx context.Context, sb *sandbox.Sandbox) error {
	cm, err := sb.Client.CoreV1().ConfigMaps(helmNamespace).Get(ctx, helmRelease+"-kube-scheduler-config", metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("the chart's scheduler configuration: %w", err)
	}
	secret, err := sb.Client.CoreV1().Secrets(helmNamespace).Get(ctx, helmRelease+"-serving-cert", metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("the chart's serving certificate: %w", err)
	}
	extenders, err := sb.ExtendersFrom(ctx, []byte(cm.Data["kube-scheduler-config.yaml"]), secret.Data["ca.crt"])
	if err != nil {
		return err
	}
	if len(extenders) != 1 {
		return fmt.Errorf("the chart's scheduler configuration has %d extenders, want 1", len(extenders))
	}
	return sb.ConfigureScheduler(ctx, extenders)
}

// chartPods are the Running pods of one of the release's components.
func chartPods(ctx context.Context, c kubernetes.Interface, component string) ([]corev1.Pod, error) {
	pods, err := c.CoreV1().Pods(helmNamespace).List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/instance=" + helmRelease + ",app.kubernetes.io/component=" + component})
	if err != nil {
		return nil, err
	}
	return pods.Items, nil
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

// ChartComponentsSpec: the chart's manager replicas and one agent per node
// run Ready as pods under the chart's ServiceAccounts.
func ChartComponentsSpec(c *Cluster) features.Feature {
	return feature("ms2m installed with helm", "manager and agents run under the chart's service accounts", func(ctx context.Context, t *testing.T) {
		nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for component, want := range map[string]int{"manager": 2, "agent": len(nodes.Items)} {
			pods, err := chartPods(ctx, c.Client, component)
			if err != nil {
				t.Fatal(err)
			}
			ready, on := 0, map[string]bool{}
			for i := range pods {
				p := &pods[i]
				if sa := helmRelease + "-" + component; p.Spec.ServiceAccountName != sa {
					t.Errorf("%s pod %s runs as service account %q, want the chart's %q", component, p.Name, p.Spec.ServiceAccountName, sa)
				}
				if IsReady(p) {
					ready++
					on[p.Spec.NodeName] = true
				}
			}
			if ready != want || (component == "agent" && len(on) != want) {
				t.Errorf("%d %s pods Ready on %d nodes, want %d", ready, component, len(on), want)
			}
		}
	})
}
