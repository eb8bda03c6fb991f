package kubelet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/ms2m/ms2m/pkg/simcriu"
)

// runSimulatedCRIU runs the simulated CRIU on the stopped process pid.
func (n *node) runSimulatedCRIU(ctx context.Context, pid int, cg simcriu.Cgroup, pages string) (simcriu.DumpResult, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(n.f.opts.Runtime.BinDir, simcriu.DumpCommand), "dump",
		fmt.Sprintf("--pid=%d", pid), "--cgroup="+string(cg), "--root="+n.root(), "--pages="+pages)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return simcriu.DumpResult{}, errors.New(msg)
		}
		return simcriu.DumpResult{}, fmt.Errorf("SIMULATED CRIU: %w", err)
	}
	var res simcriu.DumpResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return simcriu.DumpResult{}, fmt.Errorf("SIMULATED CRIU's answer %q: %w", stdout.String(), err)
	}
	return res, nil
}
