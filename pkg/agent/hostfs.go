package agent

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// HostPaths are the host directories the agent reads, each to be mounted
// read-only at the same path under --host-root: the runtimes'
// configuration, CRIU's (/etc/criu: what it does with TCP connections), the
// directories criu is looked for in and dpkg's database (criu's version),
// which the prober reads; and cgroup v2 (/sys/fs/cgroup), where the end of
// a checkpoint's freeze is seen (freezer.go). A file a containerd
// configuration imports from elsewhere is read only where its directory is
// mounted too. The Helm chart mounts these by default (agent.hostPaths),
// and its tests check it.
func HostPaths() []string {
	paths := []string{path.Dir(containerdConfig), path.Dir(crioConfig), path.Dir(criuConfigFiles[0])}
	paths = append(paths, criuDirs...)
	return append(paths, path.Dir(dpkgStatus), cgroupRoot)
}

// hostFS reads the host's filesystem, mounted at root in the agent's
// container (--host-root). Paths are the host's ("/usr/sbin/criu").
// Symbolic links resolve as on the host: an absolute target is looked up
// under root, never in the agent's own image, and nothing resolves to
// outside root.
type hostFS struct{ root string }

// maxLinks bounds the symbolic links one lookup follows, as Linux's 40.
const maxLinks = 40

var errTooManyLinks = errors.New("too many levels of symbolic links")

// resolve returns the agent-side path of a host path, every symbolic link
// in it resolved under root.
func (h hostFS) resolve(p string) (string, error) {
	resolved, err := h.resolveHost(p)
	if err != nil {
		return "", err
	}
	return filepath.Join(h.root, filepath.FromSlash(resolved)), nil
}

// resolveHost returns the host path p designates, links resolved.
func (h hostFS) resolveHost(p string) (string, error) {
	rest := strings.Split(p, "/")
	resolved, links := "/", 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			resolved = path.Dir(resolved)
			continue
		}
		next := path.Join(resolved, c)
		agentPath := filepath.Join(h.root, filepath.FromSlash(next))
		fi, err := os.Lstat(agentPath)
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			resolved = next
			continue
		}
		if links++; links > maxLinks {
			return "", &fs.PathError{Op: "resolve", Path: p, Err: errTooManyLinks}
		}
		target, err := os.Readlink(agentPath)
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			resolved = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return resolved, nil
}

// isNotExist says whether a lookup failed because the path is not there
// (a missing element, or a file where a directory was expected).
func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

func (h hostFS) readFile(p string) ([]byte, error) {
	a, err := h.resolve(p)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(a)
}

func (h hostFS) stat(p string) (fs.FileInfo, error) {
	a, err := h.resolve(p)
	if err != nil {
		return nil, err
	}
	return os.Stat(a)
}

func (h hostFS) isDir(p string) bool {
	fi, err := h.stat(p)
	return err == nil && fi.IsDir()
}

// files lists the files under a host directory, recursively, in lexical
// order, as CRI-O walks its drop-in directory; a missing directory has
// none.
func (h hostFS) files(dir string) ([]string, error) {
	a, err := h.resolve(dir)
	if isNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	err = filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(a, p)
		if err != nil {
			return err
		}
		out = append(out, path.Join(dir, filepath.ToSlash(rel)))
		return nil
	})
	return out, err
}

// glob expands a host path pattern whose wildcards are in its last
// element (as "/etc/containerd/conf.d/*.toml"), in lexical order.
func (h hostFS) glob(pattern string) ([]string, error) {
	dir, base := path.Split(pattern)
	if strings.ContainsAny(dir, `*?[\`) {
		return nil, errors.New("wildcards only in the last path element are supported")
	}
	a, err := h.resolve(dir)
	if isNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	matches, err := filepath.Glob(filepath.Join(a, base))
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(matches))
	for _, m := range matches {
		out = append(out, path.Join(dir, filepath.Base(m)))
	}
	return out, nil
}
