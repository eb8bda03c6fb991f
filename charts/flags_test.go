package charts_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// TestFlagsAreAcceptedByTheBinaries parses every rendered container's
// arguments with the real binary: `BINARY ARGS... --help` exits 0 only when
// each flag exists and its value parses.
func TestFlagsAreAcceptedByTheBinaries(t *testing.T) {
	buildOnce.Do(func() {
		binDir = t.TempDir()
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/ms2m-manager", "./cmd/ms2m-agent")
		cmd.Dir = repoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = err
			t.Logf("%s", out)
		}
	})
	if buildErr != nil {
		t.Fatalf("building the binaries: %v", buildErr)
	}
	for name, values := range map[string][]string{"defaults": nil, "everything on": everythingOn()} {
		objs := render(t, values...)
		for _, c := range append(podSpecOf(t, objs, "Deployment", release+"-manager").Containers, podSpecOf(t, objs, "DaemonSet", release+"-agent").Containers...) {
			t.Run(name+"/"+c.Name, func(t *testing.T) {
				if len(c.Command) != 1 || !strings.HasPrefix(c.Command[0], "/ms2m/") {
					t.Fatalf("command %v is not an ms2m binary", c.Command)
				}
				args := make([]string, 0, len(c.Args)+1)
				for _, a := range c.Args {
					args = append(args, strings.ReplaceAll(a, "$(POD_IP)", "10.0.0.7"))
				}
				cmd := exec.Command(filepath.Join(binDir, filepath.Base(c.Command[0])), append(args, "--help")...)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("%s refuses the chart's arguments %v: %v\n%s", c.Command[0], c.Args, err, firstLines(string(out), 3))
				}
			})
		}
	}
}

func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}
