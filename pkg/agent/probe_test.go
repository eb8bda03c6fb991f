package agent

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

func node(runtime string) *corev1.Node {
	return &corev1.Node{Status: corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{ContainerRuntimeVersion: runtime}}}
}

// hostFile puts one entry into a fake host filesystem.
type hostFile func(t *testing.T, root string)

func write(t *testing.T, root, p string, data []byte, mode os.FileMode) {
	t.Helper()
	full := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, data, mode); err != nil {
		t.Fatal(err)
	}
}

func file(p, content string) hostFile {
	return func(t *testing.T, root string) { write(t, root, p, []byte(content), 0o644) }
}

func executable(p string, content []byte) hostFile {
	return func(t *testing.T, root string) { write(t, root, p, content, 0o755) }
}

func dir(p string) hostFile {
	return func(t *testing.T, root string) {
		if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func symlink(p, target string) hostFile {
	return func(t *testing.T, root string) {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, full); err != nil {
			t.Fatal(err)
		}
	}
}

// hostTree builds a fake host filesystem, as --host-root sees it.
func hostTree(t *testing.T, files ...[]hostFile) string {
	root := t.TempDir()
	for _, group := range files {
		for _, f := range group {
			f(t, root)
		}
	}
	return root
}

func some(files ...hostFile) []hostFile { return files }

// dpkgStatusWith has criu installed at the given version, between two other
// packages.
func dpkgStatusWith(criuVersion string) string {
	return "Package: adduser\nStatus: install ok installed\nVersion: 3.134\nDescription: add users\n .\n more\n\n" +
		"Package: criu\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\nVersion: " + criuVersion + "\n" +
		"Description: checkpoint and restore in userspace\n\n" +
		"Package: crun\nStatus: deinstall ok config-files\nVersion: 1.14-1\n"
}

// elfWithPackageNote is a minimal ELF file whose .note.package says it
// belongs to package name at version, as Fedora's binaries do.
func elfWithPackageNote(t *testing.T, name, version string) []byte {
	t.Helper()
	desc := []byte(`{"type":"rpm","name":"` + name + `","version":"` + version + `","architecture":"x86_64","osCpe":"cpe:/o:fedoraproject:fedora:40"}` + "\x00")
	for len(desc)%4 != 0 {
		desc = append(desc, 0)
	}
	var note bytes.Buffer
	for _, v := range []uint32{4, uint32(len(desc)), packageNoteType} {
		_ = binary.Write(&note, binary.LittleEndian, v)
	}
	note.WriteString("FDO\x00")
	note.Write(desc)
	shstrtab := "\x00.note.package\x00.shstrtab\x00"
	noteOff := uint64(64)
	strOff := noteOff + uint64(note.Len())
	shOff := (strOff + uint64(len(shstrtab)) + 7) &^ 7

	var b bytes.Buffer
	hdr := elf.Header64{
		Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Shoff: shOff, Ehsize: 64, Shentsize: 64, Shnum: 3, Shstrndx: 2,
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS], hdr.Ident[elf.EI_DATA], hdr.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	_ = binary.Write(&b, binary.LittleEndian, hdr)
	b.Write(note.Bytes())
	b.WriteString(shstrtab)
	b.Write(make([]byte, int(shOff)-b.Len()))
	for _, s := range []elf.Section64{
		{},
		{Name: 1, Type: uint32(elf.SHT_NOTE), Flags: uint64(elf.SHF_ALLOC), Off: noteOff, Size: uint64(note.Len()), Addralign: 4},
		{Name: 15, Type: uint32(elf.SHT_STRTAB), Off: strOff, Size: uint64(len(shstrtab)), Addralign: 1},
	} {
		_ = binary.Write(&b, binary.LittleEndian, s)
	}
	return b.Bytes()
}

// Host fixtures shared by the cases.
var (
	// criuDeb: criu 4.1 from the Debian/Ubuntu package, in /usr/sbin.
	criuDeb = some(
		executable("/usr/sbin/criu", []byte("\x7fELF stripped")),
		dir("/usr/local/sbin"), dir("/usr/bin"),
		file("/var/lib/dpkg/status", dpkgStatusWith("4.1-1ubuntu0.24.04.1")),
		file("/var/lib/dpkg/info/criu.list", "/.\n/usr\n/usr/sbin\n/usr/sbin/criu\n/usr/share/man/man8/criu.8.gz\n"),
	)
	// binDirsWithoutCRIU: the host's binary directories, no criu.
	binDirsWithoutCRIU = some(dir("/usr/sbin"), dir("/usr/bin"), executable("/usr/bin/runc", []byte("runc")))

	crioRestore      = some(file("/etc/crio/crio.conf.d/05-checkpoint.conf", "[crio.checkpoint_restore]\ncontainer_level_enabled = \"checkpoint_restore\"\n"))
	crioPackaged     = some(file("/etc/crio/crio.conf.d/10-crio.conf", "[crio.image]\nsignature_policy = \"/etc/crio/policy.json\"\n\n[crio.runtime]\ndefault_runtime = \"crun\"\n"))
	crioCRIUOnly     = some(file("/etc/crio/crio.conf", "[crio.runtime]\nenable_criu_support = true\n"))
	containerdOptIn  = some(file("/etc/containerd/config.toml", "version = 3\n\n[plugins.'io.containerd.cri.v1.runtime']\n  enable_experimental_restore_via_create = true\n"))
	containerdPlain  = some(file("/etc/containerd/config.toml", "version = 3\n\n[plugins.'io.containerd.cri.v1.runtime'.containerd]\n  default_runtime_name = 'runc'\n"))
	containerdOptOut = some(file("/etc/containerd/config.toml", "version = 3\n[plugins.'io.containerd.cri.v1.runtime']\n  enable_experimental_restore_via_create = false\n"))
)

func TestProbe(t *testing.T) {
	for _, tc := range []struct {
		name    string
		runtime string
		host    [][]hostFile
		restore bool
		criu    string // the criu-version label, when restore
		tcp     string // the criu-connected-tcp label, when restore
		// labelRuntime is the runtime label, when not the version
		// string's scheme.
		labelRuntime string
		why          []string
	}{
		{name: "sandbox node", runtime: "ms2m-sim://0.1.0", restore: true, criu: "simulated"},
		{name: "sandbox node simulating containerd", runtime: "ms2m-sim://0.1.0 (simulating containerd 2.2.7)", restore: true, criu: "simulated", labelRuntime: "containerd"},
		{name: "sandbox node simulating cri-o without restore", runtime: "ms2m-sim://0.1.0 (simulating cri-o 1.37.0) (restore disabled)", why: []string{"without restore"}},
		{name: "sandbox node without restore", runtime: "ms2m-sim://0.1.0 (restore disabled)", why: []string{"without restore"}},

		// CRI-O.
		{name: "cri-o with restore on and criu in /usr/sbin from dpkg", runtime: "cri-o://1.34.14",
			host: [][]hostFile{criuDeb, crioPackaged, crioRestore}, restore: true, criu: "4.1"},
		{name: "cri-o with only enable_criu_support (restore at its checkpoint_only default)", runtime: "cri-o://1.34.14",
			host: [][]hostFile{criuDeb, crioCRIUOnly, crioPackaged},
			why:  []string{`CRI-O 1.34.14 defaults [crio.checkpoint_restore] container_level_enabled to "checkpoint_only"`, `set it to "checkpoint_restore"`}},
		{name: "cri-o 1.37 restores at its default (checkpoint_restore)", runtime: "cri-o://1.37.0",
			host: [][]hostFile{criuDeb, crioPackaged}, restore: true, criu: "4.1"},
		{name: "cri-o 1.37 with checkpoint_only set", runtime: "cri-o://1.37.2",
			host: [][]hostFile{criuDeb, some(file("/etc/crio/crio.conf.d/20-ckpt.conf", "[crio.checkpoint_restore]\ncontainer_level_enabled = \"checkpoint_only\"\n"))},
			why:  []string{`container_level_enabled = "checkpoint_only" (/etc/crio/crio.conf.d/20-ckpt.conf)`, `set it to "checkpoint_restore"`}},
		{name: "cri-o with checkpoint_only set", runtime: "cri-o://1.36.6",
			host: [][]hostFile{criuDeb, some(file("/etc/crio/crio.conf", "[crio.checkpoint_restore]\ncontainer_level_enabled = 'checkpoint_only'\n"))},
			why:  []string{`container_level_enabled = "checkpoint_only" (/etc/crio/crio.conf) allows checkpoints but no restore`}},
		{name: "cri-o drop-in turns restore off", runtime: "cri-o://1.35.9",
			host: [][]hostFile{criuDeb, some(
				file("/etc/crio/crio.conf", "[crio.checkpoint_restore]\ncontainer_level_enabled = \"checkpoint_restore\"\n"),
				file("/etc/crio/crio.conf.d/99-hardening.conf", "[crio.checkpoint_restore]\ncontainer_level_enabled = \"none\"\n"))},
			why: []string{`container_level_enabled = "none" (/etc/crio/crio.conf.d/99-hardening.conf)`}},
		{name: "cri-o later drop-in turns restore on", runtime: "cri-o://1.35.9",
			host: [][]hostFile{criuDeb, some(
				file("/etc/crio/crio.conf.d/10-crio.conf", "[crio.checkpoint_restore]\ncontainer_level_enabled = \"checkpoint_only\"\n"),
				file("/etc/crio/crio.conf.d/20-ms2m.conf", "[crio]\ncheckpoint_restore.container_level_enabled = \"checkpoint_restore\"\n"))},
			restore: true, criu: "4.1"},
		{name: "cri-o drop-in turns criu support off", runtime: "cri-o://1.34.14",
			host: [][]hostFile{criuDeb, crioRestore, some(file("/etc/crio/crio.conf.d/50-no-criu.conf", "[crio.runtime]\nenable_criu_support = false\n"))},
			why:  []string{"enable_criu_support = false (/etc/crio/crio.conf.d/50-no-criu.conf)"}},
		{name: "cri-o before the level option restores with criu support on", runtime: "cri-o://1.34.13",
			host: [][]hostFile{criuDeb, crioPackaged}, restore: true, criu: "4.1"},
		{name: "cri-o 1.29 has criu support off by default", runtime: "cri-o://1.29.8",
			host: [][]hostFile{criuDeb, crioPackaged}, why: []string{"CRI-O 1.29.8 has [crio.runtime] enable_criu_support off by default"}},
		{name: "cri-o 1.29 with criu support on", runtime: "cri-o://1.29.8",
			host: [][]hostFile{criuDeb, crioCRIUOnly}, restore: true, criu: "4.1"},
		{name: "cri-o branch with the option backported in an unknown release", runtime: "cri-o://1.32.9",
			host: [][]hostFile{criuDeb, crioCRIUOnly}, why: []string{"CRI-O 1.32.9 may default", "releases without the option ignore it"}},
		{name: "cri-o with an unreadable drop-in", runtime: "cri-o://1.34.14",
			host: [][]hostFile{criuDeb, crioRestore, some(file("/etc/crio/crio.conf.d/30-broken.conf", "[crio.runtime\n"))},
			why:  []string{"/etc/crio/crio.conf.d/30-broken.conf: line 2: expected '.' or ']' to end table name"}},
		// CRI-O refuses to start on a file that defines a table twice: the
		// agent does not guess which value CRI-O would use.
		{name: "cri-o with a drop-in that defines a table twice", runtime: "cri-o://1.34.14",
			host: [][]hostFile{criuDeb, crioRestore, some(file("/etc/crio/crio.conf.d/40-twice.conf",
				"[crio.runtime]\nenable_criu_support = true\n\n[crio.runtime]\nenable_criu_support = false\n"))},
			why: []string{"/etc/crio/crio.conf.d/40-twice.conf: line 4: Key 'crio.runtime' has already been defined"}},
		{name: "cri-o with an unreadable main file", runtime: "cri-o://1.34.14",
			host: [][]hostFile{criuDeb, crioRestore, some(file("/etc/crio/crio.conf", "[crio.runtime]\nenable_criu_support = yes\n"))},
			why:  []string{"/etc/crio/crio.conf: line 2"}},

		// CRIU on the host.
		{name: "criu missing", runtime: "cri-o://1.34.14", host: [][]hostFile{binDirsWithoutCRIU, crioRestore},
			why: []string{"criu not found: no executable criu in /usr/local/sbin, /usr/local/bin, /usr/sbin, /usr/bin, /sbin, /bin", "mounted: /usr/sbin, /usr/bin)"}},
		{name: "no binary directory of the host mounted", runtime: "cri-o://1.34.14", host: [][]hostFile{crioRestore},
			why: []string{"criu cannot be looked for: none of /usr/local/sbin", "mount the host directory that holds criu"}},
		{name: "both criu and the runtime's switch missing", runtime: "cri-o://1.34.14", host: [][]hostFile{binDirsWithoutCRIU},
			why: []string{"container_level_enabled", "criu not found"}},
		{name: "criu not executable", runtime: "cri-o://1.34.14",
			host: [][]hostFile{crioRestore, some(file("/usr/sbin/criu", "not executable"))}, why: []string{"criu not found"}},
		{name: "criu built from source in /usr/local/sbin shadows the package: version unknown", runtime: "cri-o://1.34.14",
			host: [][]hostFile{criuDeb, crioRestore, some(executable("/usr/local/sbin/criu", []byte("\x7fELF")))}, restore: true, criu: "unknown"},
		{name: "criu with a dpkg entry but no file list", runtime: "cri-o://1.34.14",
			host:    [][]hostFile{crioRestore, some(executable("/usr/sbin/criu", []byte("x")), file("/var/lib/dpkg/status", dpkgStatusWith("1:3.17.1-2+deb12u1")))},
			restore: true, criu: "3.17.1"},
		{name: "criu removed from dpkg (config files only)", runtime: "cri-o://1.34.14",
			host: [][]hostFile{crioRestore, some(executable("/usr/sbin/criu", []byte("x")),
				file("/var/lib/dpkg/status", "Package: criu\nStatus: deinstall ok config-files\nVersion: 4.1-1\n"))},
			restore: true, criu: "unknown"},
		{name: "criu from an rpm with an ELF package note", runtime: "cri-o://1.34.14",
			host:    [][]hostFile{crioRestore, some(executable("/usr/sbin/criu", elfWithPackageNote(t, "criu", "4.0-3.fc41")))},
			restore: true, criu: "4.0"},
		{name: "merged /usr: /sbin links to usr/sbin, dpkg lists /sbin/criu", runtime: "cri-o://1.34.14",
			host: [][]hostFile{crioRestore, some(executable("/usr/sbin/criu", []byte("x")), symlink("/sbin", "usr/sbin"),
				file("/var/lib/dpkg/status", dpkgStatusWith("3.16.1-2")), file("/var/lib/dpkg/info/criu:amd64.list", "/sbin/criu\n"))},
			restore: true, criu: "3.16.1"},
		{name: "criu an absolute link to /opt resolves under the host root", runtime: "cri-o://1.34.14",
			host:    [][]hostFile{crioRestore, some(symlink("/usr/local/bin/criu", "/opt/criu/bin/criu"), executable("/opt/criu/bin/criu", []byte("x")))},
			restore: true, criu: "unknown"},

		// containerd.
		{name: "containerd with restore via create on", runtime: "containerd://2.2.7", host: [][]hostFile{criuDeb, containerdOptIn}, restore: true, criu: "4.1"},
		{name: "containerd with restore via create at its default (off)", runtime: "containerd://2.3.4",
			host: [][]hostFile{criuDeb, containerdPlain},
			why:  []string{`containerd 2.3.4 has enable_experimental_restore_via_create off by default`, `[plugins."io.containerd.cri.v1.runtime"]`}},
		{name: "containerd with restore via create turned off", runtime: "containerd://2.2.8",
			host: [][]hostFile{criuDeb, containerdOptOut}, why: []string{"enable_experimental_restore_via_create = false (/etc/containerd/config.toml)"}},
		{name: "containerd opt-in in an imported version 2 file", runtime: "containerd://v2.2.7",
			host: [][]hostFile{criuDeb, some(
				file("/etc/containerd/config.toml", "version = 3\nimports = ['conf.d/*.toml']\n"),
				file("/etc/containerd/conf.d/50-restore.toml", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  enable_experimental_restore_via_create = true\n"))},
			restore: true, criu: "4.1"},
		{name: "containerd import overrides the main file", runtime: "containerd://2.3.5",
			host: [][]hostFile{criuDeb, containerdOptIn, some(
				file("/etc/containerd/config.toml", "version = 3\nimports = ['/etc/containerd/conf.d/*.toml']\n[plugins.'io.containerd.cri.v1.runtime']\n  enable_experimental_restore_via_create = true\n"),
				file("/etc/containerd/conf.d/90-off.toml", "version = 3\n[plugins.'io.containerd.cri.v1.runtime']\n  enable_criu = false\n"))},
			why: []string{"enable_criu = false (/etc/containerd/conf.d/90-off.toml)"}},
		{name: "containerd without config.toml reads conf.d", runtime: "containerd://2.2.7",
			host:    [][]hostFile{criuDeb, some(file("/etc/containerd/conf.d/restore.toml", "version = 3\n[plugins.'io.containerd.cri.v1.runtime']\nenable_experimental_restore_via_create = true\n"))},
			restore: true, criu: "4.1"},
		{name: "containerd with an unreadable config.toml", runtime: "containerd://2.2.7",
			host: [][]hostFile{criuDeb, some(file("/etc/containerd/config.toml", "version = 3\n[plugins.'io.containerd.cri.v1.runtime'\n"))},
			why:  []string{"containerd: /etc/containerd/config.toml: line 2: toml: expected ']' to close table name"}},
		{name: "containerd with an unreadable import", runtime: "containerd://2.2.7",
			host: [][]hostFile{criuDeb, some(
				file("/etc/containerd/config.toml", "version = 3\nimports = ['conf.d/*.toml']\n"),
				file("/etc/containerd/conf.d/50-restore.toml", "version = 3\n[plugins.'io.containerd.cri.v1.runtime']\nenable_experimental_restore_via_create = yes\n"))},
			why: []string{"containerd: /etc/containerd/conf.d/50-restore.toml: line 3"}},
		// containerd refuses to start on a file that defines a table twice.
		{name: "containerd with a table defined twice", runtime: "containerd://2.2.7",
			host: [][]hostFile{criuDeb, some(file("/etc/containerd/config.toml",
				"version = 3\n[plugins.'io.containerd.cri.v1.runtime']\nenable_criu = true\n[plugins.'io.containerd.cri.v1.runtime']\nenable_experimental_restore_via_create = true\n"))},
			why: []string{"containerd: /etc/containerd/config.toml: line 4: toml: table io.containerd.cri.v1.runtime already exists"}},
		{name: "containerd imports holding a number", runtime: "containerd://2.2.7",
			host: [][]hostFile{criuDeb, some(file("/etc/containerd/config.toml", "version = 3\nimports = [1]\n"))},
			why:  []string{"containerd: /etc/containerd/config.toml: imports holds 1, not a path"}},
		{name: "containerd 2.1 restores without the opt-in", runtime: "containerd://2.1.4", host: [][]hostFile{criuDeb, containerdPlain}, restore: true, criu: "4.1"},
		{name: "containerd 2.0 cannot restore", runtime: "containerd://2.0.0", host: [][]hostFile{criuDeb, containerdOptIn},
			why: []string{"containerd 2.0.0 cannot restore through the CRI"}},
		{name: "containerd 1.7 cannot restore", runtime: "containerd://1.7.24-0ubuntu1~24.04.1", host: [][]hostFile{criuDeb, containerdOptIn},
			why: []string{"containerd 1.7.24-0ubuntu1~24.04.1 cannot restore"}},
		{name: "containerd 2.4 removed restore via create", runtime: "containerd://2.4.0", host: [][]hostFile{criuDeb, containerdOptIn},
			why: []string{"removed in 2.4", "run containerd 2.3 with enable_experimental_restore_via_create = true, or CRI-O 1.37 or later"}},

		// What CRIU does with a connected TCP socket, from its configuration.
		{name: "runc.conf with tcp-close", runtime: "cri-o://1.37.0",
			host: [][]hostFile{criuDeb, some(file("/etc/criu/runc.conf", "# restore connections closed\ntcp-close\n"))}, restore: true, criu: "4.1", tcp: "tcp-close"},
		{name: "crun.conf with tcp-established", runtime: "cri-o://1.37.0",
			host: [][]hostFile{criuDeb, some(file("/etc/criu/crun.conf", "tcp-established\n"))}, restore: true, criu: "4.1", tcp: "tcp-established"},
		{name: "tcp-close wins over tcp-established", runtime: "containerd://2.1.4",
			host:    [][]hostFile{criuDeb, containerdPlain, some(file("/etc/criu/default.conf", "tcp-close\n"), file("/etc/criu/runc.conf", "tcp-established\n"))},
			restore: true, criu: "4.1", tcp: "tcp-close"},
		{name: "a commented-out option does not count", runtime: "cri-o://1.37.0",
			host: [][]hostFile{criuDeb, some(file("/etc/criu/runc.conf", "#tcp-close\n  # tcp-established\n"))}, restore: true, criu: "4.1"},

		{name: "docker", runtime: "docker://27.0.0", host: [][]hostFile{criuDeb}, why: []string{`container runtime "docker" cannot restore`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Prober{HostRoot: hostTree(t, tc.host...)}.Probe(node(tc.runtime))
			if c.CanRestore != tc.restore {
				t.Fatalf("CanRestore = %v (%s), want %v", c.CanRestore, c.Why, tc.restore)
			}
			l := c.Labels()
			if !tc.restore {
				if !maps(l, map[string]string{v1.LabelCheckpointRestore: "false"}) {
					t.Errorf("labels %v, want only %s=false", l, v1.LabelCheckpointRestore)
				}
				if c.Why == "" {
					t.Fatal("a node that cannot restore must say why")
				}
				for _, w := range tc.why {
					if !strings.Contains(c.Why, w) {
						t.Errorf("why %q\ndoes not say %q", c.Why, w)
					}
				}
				return
			}
			rt, _, _ := strings.Cut(tc.runtime, "://")
			if tc.labelRuntime != "" {
				rt = tc.labelRuntime
			}
			if l[v1.LabelCheckpointRestore] != "true" || l[v1.LabelRuntime] != rt || l[v1.LabelRuntimeVersion] == "" || l[v1.LabelCRIUVersion] != tc.criu {
				t.Errorf("labels %v, want checkpoint-restore=true, runtime=%s, a runtime version and criu-version=%s", l, rt, tc.criu)
			}
			if c.Why != "" {
				t.Errorf("a node that restores says why not: %s", c.Why)
			}
			if got := l[v1.LabelCRIUConnectedTCP]; got != tc.tcp {
				t.Errorf("label %s = %q, want %q", v1.LabelCRIUConnectedTCP, got, tc.tcp)
			}
			if want := map[string]string{"": "is refused", "tcp-close": "restored closed", "tcp-established": "fails"}[tc.tcp]; !strings.Contains(c.Summary(), want) {
				t.Errorf("summary %q does not say what a connected socket does (%q)", c.Summary(), want)
			}
		})
	}
}

func maps(a, b map[string]string) bool {
	ka, kb := keys(a), keys(b)
	if !slices.Equal(ka, kb) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestUpstreamVersion(t *testing.T) {
	for in, want := range map[string]string{
		"4.1-1": "4.1", "3.17.1-2+deb12u1": "3.17.1", "1:3.16.1-2": "3.16.1", "3.19-1.fc40": "3.19",
		"4.1-1~ubuntu24.04~ppa1": "4.1", "3.16.1+ds-1": "3.16.1", "git-abc": "",
	} {
		if got := upstreamVersion(in); got != want {
			t.Errorf("upstreamVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHostFSResolveStaysInRoot(t *testing.T) {
	root := hostTree(t, some(
		symlink("/etc/escape", "../../../../../../etc/passwd"),
		symlink("/etc/abs", "/etc/passwd"),
		file("/etc/passwd", "host"),
		symlink("/loop", "/loop"),
	))
	h := hostFS{root: root}
	for _, p := range []string{"/etc/escape", "/etc/abs"} {
		got, err := h.readFile(p)
		if err != nil || string(got) != "host" {
			t.Errorf("%s: read %q, %v; want the host root's /etc/passwd", p, got, err)
		}
	}
	if _, err := h.resolve("/loop"); err == nil || !strings.Contains(err.Error(), "symbolic links") {
		t.Errorf("a link loop: %v, want too many links", err)
	}
}

// Deployments mount HostPaths, one volume each: every path the agent
// reads must lie under one, and no two may overlap (two volumes at one
// mount path make the pod invalid; a nested one is mounted twice).
func TestHostPathsCoverWhatTheProberReads(t *testing.T) {
	paths := HostPaths()
	under := func(p string) bool {
		return slices.ContainsFunc(paths, func(d string) bool { return p == d || strings.HasPrefix(p, d+"/") })
	}
	read := append([]string{containerdConfig, containerdDefaultImports, crioConfig, crioConfigDir, dpkgStatus, dpkgInfoDir, cgroupRoot}, criuDirs...)
	for _, p := range read {
		if !under(p) {
			t.Errorf("the agent reads %s, under none of HostPaths %v", p, paths)
		}
	}
	for i, p := range paths {
		if !path.IsAbs(p) || path.Clean(p) != p {
			t.Errorf("host path %q is not a clean absolute path", p)
		}
		for _, q := range paths[i+1:] {
			if p == q || strings.HasPrefix(p, q+"/") || strings.HasPrefix(q, p+"/") {
				t.Errorf("host paths %s and %s overlap", p, q)
			}
		}
	}
}
