package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/e2e-framework/pkg/features"
)

// PluginSpec: `kubectl ms2m migrate POD --wait`, run through the machine's
// real kubectl (which finds the plugin on PATH), migrates the example
// consumer under load, shows each phase as it happens and ends with the
// downtime and the zero-loss line; `list` and `status` show the result;
// the consumer's verifier agrees nothing was lost.
func PluginSpec(in SpecInput) features.Feature {
	return feature("kubectl ms2m migrate --wait", "progress, downtime and zero loss, then list and status", func(ctx context.Context, t *testing.T) {
		bin := t.TempDir()
		build := exec.CommandContext(ctx, "go", "build", "-o", bin+"/", "./cmd/kubectl-ms2m")
		build.Dir = repoRoot()
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building kubectl-ms2m: %v\n%s", err, out)
		}
		plugin := func(args ...string) (string, error) {
			cmd := exec.CommandContext(ctx, "kubectl", append([]string{"ms2m"}, args...)...)
			cmd.Env = append(os.Environ(), "PATH="+bin+string(filepath.ListSeparator)+os.Getenv("PATH"), "KUBECONFIG="+in.Cluster.Kubeconfig)
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		s := in.open(t, "plugin")
		d := s.deploy(ctx, in.Load.Count/3)

		out, err := plugin("migrate", d.Pod.Name, "--namespace", s.NS, "--name", "by-plugin", "--wait", "--timeout", "2m")
		if err != nil {
			t.Fatalf("kubectl ms2m migrate --wait: %v\n%s", err, out)
		}
		t.Logf("kubectl ms2m migrate --wait:\n%s", out)
		for _, want := range []string{"Checkpointing", "Transferring", "Restoring", "Replaying", "Finalizing", "Completed in", "downtime", "handed over at the fence", "the target went live from exactly there"} {
			if !strings.Contains(out, want) {
				t.Fatalf("the progress does not show %q:\n%s", want, out)
			}
		}
		if strings.Index(out, "Checkpointing") > strings.Index(out, "Finalizing") {
			t.Fatalf("phases out of order:\n%s", out)
		}
		list, err := plugin("list", "--namespace", s.NS)
		if err != nil || !strings.Contains(list, "by-plugin") || !strings.Contains(list, "Completed") {
			t.Fatalf("kubectl ms2m list: %v\n%s", err, list)
		}
		status, err := plugin("status", "by-plugin", "--namespace", s.NS)
		if err != nil || !strings.Contains(status, "Completed") || !strings.Contains(status, d.Pod.Name) {
			t.Fatalf("kubectl ms2m status: %v\n%s", err, status)
		}
		s.verifyZeroLoss(ctx)
	})
}
