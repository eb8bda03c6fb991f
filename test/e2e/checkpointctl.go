package e2e

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	ckpt "github.com/checkpoint-restore/checkpointctl/lib"
)

// checkpointctlView is what checkpointctl shows of an archive ("inspect"):
// the engine that wrote it and the container it came from.
type checkpointctlView struct {
	Engine, Pod, Namespace, Container, BaseImage string
}

// readWithCheckpointctl reads a checkpoint archive with checkpointctl's
// library, the independent reader of the runtimes' archives, and
// classifies it as checkpointctl does (internal/container.go,
// getContainerInfo): io.container.manager "cri-o" is CRI-O, whose
// container name is in io.kubernetes.cri-o.Metadata; anything else but
// Podman is containerd, named by the io.kubernetes.cri.* annotations.
func readWithCheckpointctl(t *testing.T, archive string) checkpointctlView {
	t.Helper()
	dir := t.TempDir()
	untarMetadata(t, archive, dir)
	specDump, _, err := ckpt.ReadContainerCheckpointSpecDump(dir)
	if err != nil {
		t.Fatal(err)
	}
	config, _, err := ckpt.ReadContainerCheckpointConfigDump(dir)
	if err != nil {
		t.Fatal(err)
	}
	v := checkpointctlView{BaseImage: config.RootfsImageName}
	an := specDump.Annotations
	switch an["io.container.manager"] {
	case "cri-o":
		var md struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal([]byte(an["io.kubernetes.cri-o.Metadata"]), &md); err != nil {
			t.Fatalf("checkpointctl: failed to read io.kubernetes.cri-o.Metadata: %v", err)
		}
		v.Engine, v.Container, v.Pod, v.Namespace = "CRI-O", md.Name, an["io.kubernetes.pod.name"], an["io.kubernetes.pod.namespace"]
	case "libpod":
		v.Engine, v.Container = "Podman", config.Name
	default:
		v.Engine, v.Container = "containerd", an["io.kubernetes.cri.container-name"]
		v.Pod, v.Namespace = an["io.kubernetes.cri.sandbox-name"], an["io.kubernetes.cri.sandbox-namespace"]
	}
	return v
}

// untarMetadata extracts the archive's top-level JSON files (config.dump,
// spec.dump, status.dump) into dir.
func untarMetadata(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		switch h.Name {
		case ckpt.ConfigDumpFile, ckpt.SpecDumpFile, ckpt.StatusDumpFile:
			b, err := io.ReadAll(io.LimitReader(tr, 16<<20))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, h.Name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
}
