package sandbox

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// Reap kills every process marked as belonging to the sandbox in dir
// (EnvDir in its environment) other than the caller: what a crashed
// sandbox left behind. It returns the PIDs it killed.
func Reap(dir string) []int {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil
	}
	marker := []byte(EnvDir + "=" + abs + "\x00")
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var killed []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(append(env, 0), marker) {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			killed = append(killed, pid)
		}
	}
	return killed
}
