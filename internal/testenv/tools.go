package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

var tools sync.Map // name → toolResult, installed once per process

type toolResult struct {
	once sync.Once
	path string
	err  error
}

// GoTool returns the path of a pinned command-line tool (helm, terraform),
// which hack/go-tool.sh installs into the cache from the Go module proxy on
// first use (minutes cold). A failure names the command that fixes it.
func GoTool(name string) (string, error) {
	v, _ := tools.LoadOrStore(name, &toolResult{})
	r := v.(*toolResult)
	r.once.Do(func() {
		cmd := exec.Command(filepath.Join(RepoRoot(), "hack", "go-tool.sh"), name)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			r.err = fmt.Errorf("installing %s failed (%v): %s\nrun `hack/go-tool.sh %s` (needs the Go module proxy)", name, err, strings.TrimSpace(stderr.String()), name)
			return
		}
		r.path = strings.TrimSpace(string(out))
	})
	return r.path, r.err
}

// Helm runs the pinned helm with args and returns its stdout, or an error
// carrying its stderr. Its configuration, cache and data live in home, so
// a user's helm configuration cannot change what a test sees.
func Helm(ctx context.Context, home string, args ...string) (string, error) {
	helm, err := GoTool("helm")
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, helm, args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}
