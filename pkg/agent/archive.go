package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/checkpoint"
)

// DefaultCheckpointDir is where the kubelet writes checkpoint archives:
// "checkpoints" under its --root-dir (/var/lib/kubelet).
const DefaultCheckpointDir = "/var/lib/kubelet/checkpoints"

// checkArchive refuses an archive path that is not one the kubelet wrote
// for m's source container: directly in dir, named as the kubelet names it
// (pkg/kubelet's CheckpointContainer: checkpoint-<pod>_<namespace>-
// <container>-<RFC 3339 time>.tar). The path is read from an annotation of
// the migration, which whoever may patch the migration can write: without
// this, the agent (root on the node) would read any file a tenant names,
// push it to the tenant's registry and delete it.
func checkArchive(dir, path string, m *v1.StatefulMigration, container string) error {
	if dir == "" {
		dir = DefaultCheckpointDir
	}
	if !filepath.IsAbs(path) || filepath.Clean(path) != path || filepath.Dir(path) != filepath.Clean(dir) {
		return fmt.Errorf("checkpoint archive %q: not a file directly in the kubelet's checkpoint directory %s", path, dir)
	}
	prefix := fmt.Sprintf("checkpoint-%s_%s-%s-", m.Spec.SourcePod, m.Namespace, container)
	stamp, ok := strings.CutPrefix(filepath.Base(path), prefix)
	if stamp, ok = strings.CutSuffix(stamp, ".tar"); !ok {
		return fmt.Errorf("checkpoint archive %q: not the kubelet's archive of container %s of pod %s/%s (%s<time>.tar)",
			path, container, m.Namespace, m.Spec.SourcePod, prefix)
	}
	if _, err := time.Parse(time.RFC3339, stamp); err != nil {
		return fmt.Errorf("checkpoint archive %q: %q is not the kubelet's time stamp", path, stamp)
	}
	return nil
}

// openArchive opens a checked archive path without following a symbolic
// link, and only if it is a regular file.
func openArchive(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("checkpoint archive %s is a symbolic link: refused", path)
		}
		return nil, fmt.Errorf("checkpoint archive: %w", err)
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		_ = f.Close()
		return nil, fmt.Errorf("checkpoint archive %s is not a regular file: refused", path)
	}
	return f, nil
}

func (o Options) registries() checkpoint.Registries {
	return checkpoint.NewRegistries(o.Repository, o.AllowedRegistries, o.PlainHTTPRegistries)
}

// ValidateRepository refuses a default repository that names no registry
// host.
func (o Options) ValidateRepository() error {
	if o.Repository == "" {
		return nil
	}
	_, err := checkpoint.ParseRepository(o.Repository)
	return err
}
