package agent

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"strings"
)

// criuDirs are where the agent looks for criu on the host, in the order of
// the PATH the runtimes run it with (runc and crun look criu up in PATH;
// this is systemd's default PATH for services and CRI-O's default
// conmon_env): a criu built from source (/usr/local) shadows the
// distribution's.
var criuDirs = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// criuVersionUnknown is the version label of a criu whose version no
// package metadata states.
const criuVersionUnknown = "unknown"

// criuBinary is the criu the node's runtime would run.
type criuBinary struct {
	// Path is the host path where it was found ("/usr/sbin/criu").
	Path string
	// Version is the upstream version ("4.1"), or criuVersionUnknown.
	Version string
	// VersionFrom says where Version was read.
	VersionFrom string
}

// findCRIU looks for criu on the host and reads its version.
//
// The agent never runs the host's criu: its image (distroless) has neither
// criu nor the libraries criu links, and running a host binary through the
// host's dynamic loader would need the host's library directories mounted
// too and would run host code inside the agent, next to its service
// account token and registry credentials. The version is read from
// metadata that describes that very binary instead, in this order:
//
//  1. the ELF package note (.note.package, systemd's "ELF package
//     metadata" format) that Fedora (since 36) and its derivatives link
//     into every packaged binary;
//  2. dpkg's database (/var/lib/dpkg/status), when dpkg owns the binary
//     (its file list /var/lib/dpkg/info/criu.list names it; without the
//     list, any criu outside /usr/local, where packages never install).
//
// A criu that neither describes (built from source, or an RPM without the
// note: the RPM database is a binary Berkeley DB, NDB or SQLite file the
// agent does not parse) is still found, with version "unknown": restore
// does not depend on the label's value.
func (h hostFS) findCRIU() (criuBinary, error) {
	var mounted []string
	for _, dir := range criuDirs {
		if !h.isDir(dir) {
			continue
		}
		mounted = append(mounted, dir)
		p := path.Join(dir, "criu")
		fi, err := h.stat(p)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			continue
		}
		b := criuBinary{Path: p, Version: criuVersionUnknown}
		if v, ok := h.elfPackageVersion(p); ok {
			b.Version, b.VersionFrom = v, "its ELF package note"
		} else if v, ok := h.dpkgVersion(p); ok {
			b.Version, b.VersionFrom = v, "dpkg"
		}
		return b, nil
	}
	switch len(mounted) {
	case 0:
		return criuBinary{}, fmt.Errorf("criu cannot be looked for: none of %s is mounted under --host-root=%s (mount the host directory that holds criu into the agent)",
			strings.Join(criuDirs, ", "), h.root)
	case len(criuDirs):
		return criuBinary{}, fmt.Errorf("criu not found: no executable criu in %s under --host-root=%s (install CRIU)",
			strings.Join(criuDirs, ", "), h.root)
	}
	return criuBinary{}, fmt.Errorf("criu not found: no executable criu in %s under --host-root=%s (install CRIU, or mount the host directory that holds it; mounted: %s)",
		strings.Join(criuDirs, ", "), h.root, strings.Join(mounted, ", "))
}

// ELF package note: owner "FDO", type 0xcafe1a7e, a JSON description
// (https://systemd.io/ELF_PACKAGE_METADATA/).
const (
	packageNoteSection = ".note.package"
	packageNoteOwner   = "FDO"
	packageNoteType    = 0xcafe1a7e
)

func (h hostFS) elfPackageVersion(p string) (string, bool) {
	a, err := h.resolve(p)
	if err != nil {
		return "", false
	}
	f, err := elf.Open(a)
	if err != nil {
		return "", false
	}
	defer func() { _ = f.Close() }()
	sec := f.Section(packageNoteSection)
	if sec == nil || sec.Size > 64<<10 {
		return "", false
	}
	data, err := sec.Data()
	if err != nil {
		return "", false
	}
	for len(data) >= 12 {
		nameSize := uint64(f.ByteOrder.Uint32(data[0:4]))
		descSize := uint64(f.ByteOrder.Uint32(data[4:8]))
		typ := f.ByteOrder.Uint32(data[8:12])
		data = data[12:]
		nameEnd, descEnd := align4(nameSize), align4(descSize)
		if uint64(len(data)) < nameEnd+descSize {
			return "", false
		}
		owner := strings.TrimRight(string(data[:nameSize]), "\x00")
		desc := bytes.TrimRight(data[nameEnd:nameEnd+descSize], "\x00")
		if owner == packageNoteOwner && typ == packageNoteType {
			var meta struct {
				Name    string `json:"name"`
				Version string `json:"version"`
			}
			if json.Unmarshal(desc, &meta) != nil || meta.Name != "criu" {
				return "", false
			}
			v := upstreamVersion(meta.Version)
			return v, v != ""
		}
		if uint64(len(data)) < nameEnd+descEnd {
			return "", false
		}
		data = data[nameEnd+descEnd:]
	}
	return "", false
}

func align4(n uint64) uint64 { return (n + 3) &^ 3 }

const (
	dpkgStatus  = "/var/lib/dpkg/status"
	dpkgInfoDir = "/var/lib/dpkg/info"
)

// dpkgVersion is the version of the installed criu package, if that
// package owns the binary at p.
func (h hostFS) dpkgVersion(p string) (string, bool) {
	status, err := h.readFile(dpkgStatus)
	if err != nil {
		return "", false
	}
	version, ok := dpkgInstalled(status, "criu")
	if !ok || !h.dpkgOwns(p) {
		return "", false
	}
	v := upstreamVersion(version)
	return v, v != ""
}

var blankLines = regexp.MustCompile(`\n\s*\n`)

// dpkgInstalled reads a package's version from dpkg's status file.
func dpkgInstalled(status []byte, pkg string) (string, bool) {
	for _, stanza := range blankLines.Split(string(status), -1) {
		var name, state, version string
		for _, line := range strings.Split(stanza, "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok || strings.HasPrefix(line, " ") {
				continue
			}
			switch k {
			case "Package":
				name = strings.TrimSpace(v)
			case "Status":
				state = strings.TrimSpace(v)
			case "Version":
				version = strings.TrimSpace(v)
			}
		}
		if name == pkg && strings.HasSuffix(state, " installed") && version != "" {
			return version, true
		}
	}
	return "", false
}

// dpkgOwns says whether the criu package's file list names the binary at
// p (compared after resolving links, so that /sbin/criu and
// /usr/sbin/criu on a merged-/usr host are one file).
func (h hostFS) dpkgOwns(p string) bool {
	lists, _ := h.glob(path.Join(dpkgInfoDir, "criu.list"))
	more, _ := h.glob(path.Join(dpkgInfoDir, "criu:*.list"))
	lists = append(lists, more...)
	if len(lists) == 0 {
		return !strings.HasPrefix(p, "/usr/local/")
	}
	want, err := h.resolveHost(p)
	if err != nil {
		return false
	}
	for _, l := range lists {
		data, err := h.readFile(l)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			f := strings.TrimSpace(sc.Text())
			if path.Base(f) != "criu" {
				continue
			}
			if got, err := h.resolveHost(f); err == nil && got == want {
				return true
			}
		}
	}
	return false
}

var leadingVersion = regexp.MustCompile(`^[0-9]+(\.[0-9]+)*`)

// upstreamVersion is the upstream part of a package version: no epoch
// ("1:"), no packaging revision or suffix ("-2", "-1.fc40", "+dfsg",
// "~ppa1"); "" when it does not start with a number.
func upstreamVersion(v string) string {
	if i := strings.IndexByte(v, ':'); i >= 0 && leadingVersion.MatchString(v[:i]) {
		v = v[i+1:]
	}
	return leadingVersion.FindString(v)
}
