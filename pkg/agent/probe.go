package agent

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// Capability is what the agent found out about its node.
type Capability struct {
	CanRestore     bool
	Runtime        string
	RuntimeVersion string
	CRIUVersion    string
	// CRIUPath is where criu was found on the host, and CRIUVersionFrom
	// where its version was read ("" when it is unknown).
	CRIUPath, CRIUVersionFrom string
	// Why explains a node that cannot restore: every problem found, each
	// with the setting or file to change.
	Why string
	// ConnectedTCP is what the node's CRIU configuration does with a
	// connected TCP socket at a checkpoint (empty Option: CRIU refuses it).
	ConnectedTCP criuTCP
}

// Labels are the node labels the scheduler extender reads.
func (c Capability) Labels() map[string]string {
	if !c.CanRestore {
		return map[string]string{v1.LabelCheckpointRestore: "false"}
	}
	l := map[string]string{
		v1.LabelCheckpointRestore: "true", v1.LabelRuntime: c.Runtime,
		v1.LabelRuntimeVersion: c.RuntimeVersion, v1.LabelCRIUVersion: c.CRIUVersion,
	}
	if c.ConnectedTCP.Option != "" {
		l[v1.LabelCRIUConnectedTCP] = c.ConnectedTCP.Option
	}
	return l
}

// labelKeys are the labels Labels may set.
var labelKeys = []string{v1.LabelCheckpointRestore, v1.LabelRuntime, v1.LabelRuntimeVersion, v1.LabelCRIUVersion, v1.LabelCRIUConnectedTCP}

// tcpSummary says what a checkpoint does with the app's TCP connections.
func (c Capability) tcpSummary() string {
	switch c.ConnectedTCP.Option {
	case "tcp-close":
		return fmt.Sprintf("; connected TCP sockets are checkpointed and restored closed (tcp-close in %s)", c.ConnectedTCP.File)
	case "tcp-established":
		return fmt.Sprintf("; connected TCP sockets are checkpointed, but their restore in a new pod fails (tcp-established in %s: use tcp-close)", c.ConnectedTCP.File)
	}
	return "; a checkpoint of a container holding a connected TCP socket is refused (CRIU's default; tcp-close in /etc/criu/runc.conf allows it)"
}

// Summary is one line on the capability, for Events and logs.
func (c Capability) Summary() string {
	if !c.CanRestore {
		return c.Why
	}
	if c.CRIUPath == "" {
		return fmt.Sprintf("restores checkpoints: runtime %s %s, CRIU %s", c.Runtime, c.RuntimeVersion, c.CRIUVersion) + c.tcpSummary()
	}
	from := "version unknown: no package metadata describes it"
	if c.CRIUVersionFrom != "" {
		from = "version from " + c.CRIUVersionFrom
	}
	return fmt.Sprintf("restores checkpoints: runtime %s %s, CRIU %s (%s, %s)", c.Runtime, c.RuntimeVersion, c.CRIUVersion, c.CRIUPath, from) + c.tcpSummary()
}

// Prober finds out whether a node can restore checkpoints, from the host's
// files only: the runtime's configuration (both runtimes can ship restore
// off, so it is read, not assumed) and the criu binary. HostRoot is where
// the host's filesystem is mounted ("/" when the agent runs on the host);
// see findCRIU, crioProblems and containerdProblems for what is read.
type Prober struct {
	HostRoot string
}

// label label-values must be short and plain.
var unsafeLabel = regexp.MustCompile(`[^A-Za-z0-9._-]`)

func labelValue(s string) string {
	s = unsafeLabel.ReplaceAllString(s, "_")
	if len(s) > 63 {
		s = s[:63]
	}
	return strings.Trim(s, "._-")
}

// Probe inspects the node as its runtime reports itself
// (status.nodeInfo.containerRuntimeVersion, e.g. "cri-o://1.34.14").
func (p Prober) Probe(node *corev1.Node) Capability {
	rt, ver, _ := strings.Cut(node.Status.NodeInfo.ContainerRuntimeVersion, "://")
	raw := strings.Fields(ver + " ")[0]
	c := Capability{Runtime: labelValue(rt), RuntimeVersion: labelValue(raw)}
	root := p.HostRoot
	if root == "" {
		root = "/"
	}
	h := hostFS{root: root}
	c.ConnectedTCP = h.criuConnectedTCP()
	var problems []string
	switch rt {
	case "ms2m-sim":
		// The sandbox's simulated runtime: restore works unless the node
		// was started without it; it simulates the runtime it names
		// ("ms2m-sim://0.1.0 (simulating cri-o 1.37.0)").
		c.CanRestore = !strings.Contains(ver, "restore disabled")
		c.CRIUVersion = "simulated"
		if _, sim, ok := strings.Cut(ver, "(simulating "); ok {
			if f := strings.Fields(strings.TrimSuffix(strings.SplitN(sim, ")", 2)[0], ")")); len(f) == 2 {
				c.Runtime, c.RuntimeVersion = labelValue(f[0]), labelValue(f[1])
			}
		}
		if !c.CanRestore {
			c.Why = "the sandbox node was started without restore"
		}
		return c
	case "cri-o":
		problems = h.crioProblems(parseVersion(raw), raw)
	case "containerd":
		problems = h.containerdProblems(parseVersion(raw), raw)
	default:
		c.Why = fmt.Sprintf("container runtime %q cannot restore checkpoints: ms2m needs CRI-O or containerd", rt)
		return c
	}
	criu, err := h.findCRIU()
	if err != nil {
		problems = append(problems, err.Error())
	} else {
		c.CRIUPath, c.CRIUVersionFrom = criu.Path, criu.VersionFrom
		if c.CRIUVersion = labelValue(criu.Version); c.CRIUVersion == "" {
			c.CRIUVersion = criuVersionUnknown
		}
	}
	if len(problems) > 0 {
		c.Why = strings.Join(problems, "; ")
		return c
	}
	c.CanRestore = true
	return c
}

// version is a runtime's release, as its version string starts
// ("1.34.14", "v2.2.7", "1.7.24-0ubuntu1"); ok is false when it does not
// start with a number.
type version struct {
	major, minor, patch int
	ok                  bool
}

var versionPrefix = regexp.MustCompile(`^v?([0-9]+)\.([0-9]+)(?:\.([0-9]+))?`)

func parseVersion(s string) version {
	m := versionPrefix.FindStringSubmatch(s)
	if m == nil {
		return version{}
	}
	v := version{ok: true}
	v.major, _ = strconv.Atoi(m[1])
	v.minor, _ = strconv.Atoi(m[2])
	v.patch, _ = strconv.Atoi(m[3]) // "" (no patch) is 0
	return v
}

// less says whether v is older than major.minor.patch.
func (v version) less(major, minor, patch int) bool {
	if v.major != major {
		return v.major < major
	}
	if v.minor != minor {
		return v.minor < minor
	}
	return v.patch < patch
}
