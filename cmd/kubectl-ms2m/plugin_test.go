package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestRealKubectlRunsThePlugin builds kubectl-ms2m, puts it on a PATH of
// its own and asks the machine's real kubectl for it, as a user who
// installed the binary would.
func TestRealKubectlRunsThePlugin(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatalf("kubectl not found on PATH: %v", err)
	}
	bin := t.TempDir()
	plugin := filepath.Join(bin, "kubectl-ms2m")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", plugin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// Only the plugin's directory and kubectl's: no other kubectl-* can
	// shadow it.
	pathEnv := "PATH=" + bin + string(os.PathListSeparator) + filepath.Dir(kubectl)
	kc := kubeconfig(t)
	kubectlRun := func(t *testing.T, args ...string) string {
		t.Helper()
		cmd := exec.Command(kubectl, args...)
		cmd.Env = append(os.Environ(), pathEnv, "KUBECONFIG="+kc)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	t.Run("plugin list finds it", func(t *testing.T) {
		expectContains(t, "kubectl plugin list", kubectlRun(t, "plugin", "list"), plugin)
	})
	t.Run("help names it kubectl ms2m", func(t *testing.T) {
		expectContains(t, "kubectl ms2m --help", kubectlRun(t, "ms2m", "--help"),
			"kubectl ms2m [command]", "migrate Live-migrate a pod", "status Show one migration", "list List migrations", "cancel Cancel a migration")
		expectContains(t, "kubectl ms2m migrate --help", kubectlRun(t, "ms2m", "migrate", "--help"),
			"kubectl ms2m migrate POD [--to NODE] [--wait] [flags]", "kubectl ms2m migrate orders-0 --to worker-2 --wait")
	})
	t.Run("kubeconfig and namespace reach the plugin", func(t *testing.T) {
		ns := namespace(t)
		newMigration(t, ns, "via-kubectl", withStatus(completedStatus()))
		expectContains(t, "kubectl ms2m list", kubectlRun(t, "ms2m", "list", "-n", ns, "--kubeconfig", kc), "via-kubectl Completed orders-0 node-a node-b 41.0ms")
	})
}
