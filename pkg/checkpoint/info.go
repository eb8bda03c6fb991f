package checkpoint

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Files of a checkpoint archive the image build reads, as CRI-O and
// containerd write them (checkpointctl's metadata package names them).
const (
	archiveConfig = "config.dump"
	archiveSpec   = "spec.dump"
)

// ContainerInfo is what the archive says about the checkpointed container
// that its image must carry: the image it ran (config.dump's
// rootfsImageName) and the user and working directory its process ran with
// (spec.dump, the OCI runtime spec).
type ContainerInfo struct {
	BaseImage  string
	User       string // "uid:gid"
	WorkingDir string
}

// ReadContainerInfo reads config.dump and spec.dump from an archive (an
// uncompressed tar). It stops once it has both; the memory pages it
// passes are skipped, not read, when r can seek.
func ReadContainerInfo(r io.Reader) (ContainerInfo, error) {
	var info ContainerInfo
	var haveConfig, haveSpec bool
	tr := tar.NewReader(r)
	for !haveConfig || !haveSpec {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return info, fmt.Errorf("reading the checkpoint archive: %w", err)
		}
		switch h.Name {
		case archiveConfig, "./" + archiveConfig:
			var c struct {
				RootfsImageName string `json:"rootfsImageName"`
			}
			if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&c); err != nil {
				return info, fmt.Errorf("%s: %w", archiveConfig, err)
			}
			info.BaseImage, haveConfig = c.RootfsImageName, true
		case archiveSpec, "./" + archiveSpec:
			var s struct {
				Process *struct {
					User struct {
						UID uint32 `json:"uid"`
						GID uint32 `json:"gid"`
					} `json:"user"`
					Cwd string `json:"cwd"`
				} `json:"process"`
			}
			if err := json.NewDecoder(io.LimitReader(tr, 16<<20)).Decode(&s); err != nil {
				return info, fmt.Errorf("%s: %w", archiveSpec, err)
			}
			if s.Process != nil {
				info.User = strconv.FormatUint(uint64(s.Process.User.UID), 10) + ":" + strconv.FormatUint(uint64(s.Process.User.GID), 10)
				info.WorkingDir = s.Process.Cwd
			}
			haveSpec = true
		}
	}
	if !haveConfig || !haveSpec {
		return info, fmt.Errorf("not a checkpoint archive: %s or %s missing", archiveConfig, archiveSpec)
	}
	return info, nil
}
