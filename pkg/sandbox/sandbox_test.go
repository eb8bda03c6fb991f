package sandbox

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/ms2m/ms2m/internal/expect"
)

func TestStartNamesWhatIsMissing(t *testing.T) {
	for name, tc := range map[string]struct {
		opts Options
		want string
	}{
		"no control plane": {Options{Dir: t.TempDir(), ControlPlaneDir: t.TempDir()}, "make control-plane"},
		"no dir":           {Options{}, "Dir is required"},
		"more nodes unable to restore than nodes": {Options{Dir: t.TempDir(), Nodes: 2, NodesWithoutRestore: 3}, "unable to restore"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Start(context.Background(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestReapStopsOnlyThisSandboxsProcesses(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	start := func(d string) *exec.Cmd {
		cmd := exec.Command("sleep", "300")
		cmd.Env = []string{EnvDir + "=" + d}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	mine, theirs := start(dir), start(other)
	exited := make(chan struct{})
	go func() { _ = mine.Wait(); close(exited) }()
	killed := Reap(dir)
	if len(killed) != 1 || killed[0] != mine.Process.Pid {
		t.Fatalf("Reap killed %v, want only %d", killed, mine.Process.Pid)
	}
	<-exited
	if err := theirs.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("another sandbox's process was killed: %v", err)
	}
}

func TestPortsFallBackWhenTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	taken := portOf(l.Addr().String())
	if got := (ports{}).free(taken); got != 0 {
		t.Fatalf("free(%d) = %d for a taken port, want 0 (any free port)", taken, got)
	}
	_ = l.Close()
	expect.Eventually(t, "the released port is offered again", func() error {
		if got := (ports{}).free(taken); got != taken {
			return net.UnknownNetworkError("not yet")
		}
		return nil
	})
}
