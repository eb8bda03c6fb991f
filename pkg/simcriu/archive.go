package simcriu

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Files of a checkpoint archive, named as CRI-O names them.
const (
	FileConfig = "config.dump"
	FileSpec   = "spec.dump"
	// FileStatus is containerd's record of the container's state
	// (containerd writes it, CRI-O does not; containerd's restore reads
	// it).
	FileStatus = "status.dump"
	// FilePages holds the resident pages of the process's anonymous
	// memory, as CRIU's pages-1.img (see DumpPages).
	FilePages = "checkpoint/pages-1.img"
	// FileMemory is the app's state from the hook, which the simulated
	// restore starts the process from.
	FileMemory     = "checkpoint/SIMULATED-state.img"
	FileRootfsDiff = "rootfs-diff.tar"
	FileStats      = "stats-dump"
	FileLog        = "dump.log"
	// FileSockets lists the connected TCP sockets dumped (under
	// --tcp-established or --tcp-close): CRIU keeps them in its inetsk and
	// tcp-stream images; the simulation keeps their addresses only.
	FileSockets = "checkpoint/inetsk-SIMULATED.json"

	// RuntimeName is what the simulated runtime calls itself in archives,
	// node info and logs.
	RuntimeName = "ms2m-sim (simulated CRIU)"
)

// ContainerConfig is config.dump: the container the archive came from.
type ContainerConfig struct {
	ID               string    `json:"id"`
	Name             string    `json:"name"`
	RootfsImage      string    `json:"rootfsImage"`
	RootfsImageRef   string    `json:"rootfsImageRef,omitempty"`
	RootfsImageName  string    `json:"rootfsImageName"`
	Runtime          string    `json:"runtime"`
	CreatedTime      time.Time `json:"createdTime"`
	CheckpointedTime time.Time `json:"checkpointedTime"`
}

// Spec is spec.dump, the subset of the OCI runtime spec a restore needs.
type Spec struct {
	OCIVersion  string            `json:"ociVersion"`
	Process     Process           `json:"process"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Process is the checkpointed process's command line, environment, user
// and working directory (the OCI runtime spec's process).
type Process struct {
	User User     `json:"user"`
	Args []string `json:"args"`
	Env  []string `json:"env,omitempty"`
	Cwd  string   `json:"cwd"`
}

// User is the process's user, as the OCI runtime spec gives it.
type User struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

// Archive is one container's checkpoint.
type Archive struct {
	Config ContainerConfig
	Spec   Spec
	// Memory is the process's memory state, from its hook; empty for a
	// container the sandbox runs without a process.
	Memory []byte
	// Pages, when set, is the process's resident pages (DumpPages), of
	// PagesSize bytes, written as FilePages. Read back, only PagesSize is
	// kept.
	Pages     io.Reader
	PagesSize int64
	// DumpDuration is how long the dump took (stats-dump).
	DumpDuration time.Duration
	// ConnectedTCP are the connected TCP sockets dumped ("local -> remote
	// STATE"); a restore needs tcp-close or tcp-established for them.
	ConnectedTCP []string
	// Status, when set, is written as status.dump (a containerd archive);
	// read back, it is the file's JSON.
	Status any
}

// ContainerdStatus is containerd's status.dump (checkpointctl's
// metadata.ContainerdStatus).
type ContainerdStatus struct {
	CreatedAt, StartedAt, FinishedAt int64
	ExitCode                         int32
	Pid                              uint32
	Reason, Message                  string
}

type stats struct {
	Simulated    bool  `json:"simulated"`
	DumpTimeUS   int64 `json:"dump_time_us"`
	MemoryBytes  int   `json:"memory_bytes"`
	PagesWritten int64 `json:"pages_written"`
}

// Write writes the archive as an uncompressed tar, as the kubelet's
// checkpoint API leaves it on the node.
func (a *Archive) Write(w io.Writer) error {
	tw := tar.NewWriter(w)
	var empty bytes.Buffer
	if err := tar.NewWriter(&empty).Close(); err != nil {
		return err
	}
	logText := fmt.Sprintf("SIMULATED CRIU (ms2m sandbox): memory state of %q dumped through the runtime-only hook, %d bytes; "+
		"%d bytes of resident anonymous pages copied from the frozen process.\n"+
		"No CRIU ran; on a real node this archive comes from CRIU.\n", a.Config.Name, len(a.Memory), a.PagesSize)
	files := []struct {
		name string
		data any
	}{
		{FileConfig, a.Config},
		{FileSpec, a.Spec},
		{FileStats, stats{Simulated: true, DumpTimeUS: a.DumpDuration.Microseconds(), MemoryBytes: len(a.Memory), PagesWritten: a.PagesSize / 4096}},
		{FileMemory, a.Memory},
		{FileRootfsDiff, empty.Bytes()},
		{FileLog, []byte(logText)},
	}
	if a.Status != nil {
		files = append(files, struct {
			name string
			data any
		}{FileStatus, a.Status})
	}
	if len(a.ConnectedTCP) > 0 {
		files = append(files, struct {
			name string
			data any
		}{FileSockets, a.ConnectedTCP})
	}
	mtime := a.Config.CheckpointedTime
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "checkpoint/", Mode: 0o700, ModTime: mtime}); err != nil {
		return err
	}
	if a.Pages != nil {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: FilePages, Mode: 0o600, Size: a.PagesSize, ModTime: mtime}); err != nil {
			return err
		}
		if _, err := io.CopyN(tw, a.Pages, a.PagesSize); err != nil {
			return fmt.Errorf("writing %s: %w", FilePages, err)
		}
	}
	for _, f := range files {
		b, ok := f.data.([]byte)
		if !ok {
			var err error
			if b, err = json.Marshal(f.data); err != nil {
				return err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o600, Size: int64(len(b)), ModTime: mtime}); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	return tw.Close()
}

// ReadArchive reads an archive written by Write (or the same files laid out
// in an image layer). A tar without config.dump and spec.dump is not a
// checkpoint and is reported as such.
func ReadArchive(r io.Reader) (*Archive, error) {
	a := &Archive{}
	var haveConfig, haveSpec bool
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading checkpoint archive: %w", err)
		}
		switch h.Name {
		case FileConfig:
			haveConfig = true
			err = json.NewDecoder(tr).Decode(&a.Config)
		case FileSpec:
			haveSpec = true
			err = json.NewDecoder(tr).Decode(&a.Spec)
		case FileMemory:
			a.Memory, err = io.ReadAll(tr)
		case FilePages:
			a.PagesSize = h.Size // read past, as a restore reads them
		case FileStatus:
			var raw json.RawMessage
			if err = json.NewDecoder(tr).Decode(&raw); err == nil {
				a.Status = raw
			}
		case FileSockets:
			err = json.NewDecoder(tr).Decode(&a.ConnectedTCP)
		case FileStats:
			var s stats
			if err = json.NewDecoder(tr).Decode(&s); err == nil {
				a.DumpDuration = time.Duration(s.DumpTimeUS) * time.Microsecond
			}
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s of the checkpoint archive: %w", h.Name, err)
		}
	}
	if !haveConfig || !haveSpec {
		return nil, fmt.Errorf("not a checkpoint archive: %s or %s missing", FileConfig, FileSpec)
	}
	return a, nil
}
