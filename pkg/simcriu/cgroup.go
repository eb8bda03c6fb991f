package simcriu

import (
	"fmt"
	"os"
	"path/filepath"
)

// Cgroup is a container's SIMULATED cgroup v2: a directory holding the two
// files a node agent reads of a cgroup, cgroup.freeze (the freeze asked
// for) and cgroup.events ("populated 1", "frozen 0|1"). The sandbox writes
// them as the kernel would when a checkpoint freezes and thaws the
// container; the processes themselves are stopped with SIGSTOP, not by a
// freezer.
type Cgroup string

// Create makes the cgroup of a started container, thawed.
func (g Cgroup) Create() error {
	if err := os.MkdirAll(string(g), 0o755); err != nil {
		return err
	}
	return g.Freeze(false)
}

// Freeze writes what the kernel shows once a freeze (or thaw) of the
// cgroup completed. Each file is replaced whole, so a reader never sees
// half of one.
func (g Cgroup) Freeze(frozen bool) error {
	v := 0
	if frozen {
		v = 1
	}
	if err := writeAtomic(filepath.Join(string(g), "cgroup.freeze"), fmt.Sprintf("%d\n", v)); err != nil {
		return err
	}
	return writeAtomic(filepath.Join(string(g), "cgroup.events"), fmt.Sprintf("populated 1\nfrozen %d\n", v))
}

// Remove drops the cgroup of a container that is gone, and its pod's once
// that is empty.
func (g Cgroup) Remove() {
	ctr := string(g)
	if filepath.Base(ctr) == "container" { // crun's leaf in its scope
		ctr = filepath.Dir(ctr)
	}
	_ = os.RemoveAll(ctr)
	_ = os.Remove(filepath.Dir(ctr))
}

func writeAtomic(path, content string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
