package agent

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// Capability is what the agent found out about its node.
type Capability struct {
	CanRestore     bool
	Runtime        string
	RuntimeVersion string
	CRIUVersion    string
	// Why explains a node that cannot restore.
	Why string
}

// Labels are the node labels the scheduler extender reads.
func (c Capability) Labels() map[string]string {
	if !c.CanRestore {
		return map[string]string{v1.LabelCheckpointRestore: "false"}
	}
	return map[string]string{
		v1.LabelCheckpointRestore: "true", v1.LabelRuntime: c.Runtime,
		v1.LabelRuntimeVersion: c.RuntimeVersion, v1.LabelCRIUVersion: c.CRIUVersion,
	}
}

// Prober finds out whether a node can restore checkpoints. Both runtimes
// ship restore disabled by default, so the configuration is read, not
// assumed. HostRoot is where the host's filesystem is mounted ("/" when
// the agent runs on the host).
type Prober struct {
	HostRoot string
	// CRIUVersion runs `criu --version` (replaceable in tests).
	CRIUVersion func() (string, error)
}

var criuVersion = regexp.MustCompile(`Version:\s*(\S+)`)

func defaultCRIUVersion() (string, error) {
	out, err := exec.Command("criu", "--version").Output()
	if err != nil {
		return "", err
	}
	if m := criuVersion.FindSubmatch(out); m != nil {
		return string(m[1]), nil
	}
	return strings.TrimSpace(string(out)), nil
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
// (status.nodeInfo.containerRuntimeVersion, e.g. "cri-o://1.31.0").
func (p Prober) Probe(node *corev1.Node) Capability {
	rt, ver, _ := strings.Cut(node.Status.NodeInfo.ContainerRuntimeVersion, "://")
	c := Capability{Runtime: labelValue(rt), RuntimeVersion: labelValue(strings.Fields(ver + " ")[0])}
	switch rt {
	case "ms2m-sim":
		// The sandbox's simulated runtime: restore works unless the node
		// was started without it.
		c.CanRestore = !strings.Contains(ver, "restore disabled")
		c.CRIUVersion = "simulated"
		if !c.CanRestore {
			c.Why = "the sandbox node was started without restore"
		}
		return c
	case "cri-o":
		if !p.configSays(`(?m)^\s*enable_criu_support\s*=\s*true`, "etc/crio/crio.conf", "etc/crio/crio.conf.d/*") {
			c.Why = "CRI-O has enable_criu_support off"
			return c
		}
	case "containerd":
		if !p.configSays(`(?m)^\s*enable_experimental_restore_via_create\s*=\s*true`, "etc/containerd/config.toml", "etc/containerd/conf.d/*") {
			c.Why = "containerd has enable_experimental_restore_via_create off"
			return c
		}
	default:
		c.Why = "unknown container runtime " + rt
		return c
	}
	get := p.CRIUVersion
	if get == nil {
		get = defaultCRIUVersion
	}
	v, err := get()
	if err != nil {
		c.Why = "criu not found: " + err.Error()
		return c
	}
	c.CanRestore, c.CRIUVersion = true, labelValue(v)
	return c
}

func (p Prober) configSays(pattern string, globs ...string) bool {
	re := regexp.MustCompile(pattern)
	root := p.HostRoot
	if root == "" {
		root = "/"
	}
	for _, g := range globs {
		files, _ := filepath.Glob(filepath.Join(root, g))
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil && re.Match(b) {
				return true
			}
		}
	}
	return false
}

// Labeler keeps the node's capability labels current.
type Labeler struct {
	Client   client.Client
	NodeName string
	Prober   Prober
	Interval time.Duration
}

// Start probes now and every Interval (a manager Runnable).
func (l *Labeler) Start(ctx context.Context) error {
	t := time.NewTicker(l.Interval)
	defer t.Stop()
	for {
		if err := l.label(ctx); err != nil && ctx.Err() == nil {
			log.FromContext(ctx).Error(err, "labelling the node's checkpoint/restore capability", "node", l.NodeName)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// NeedLeaderElection is false: every agent labels its own node.
func (l *Labeler) NeedLeaderElection() bool { return false }

func (l *Labeler) label(ctx context.Context) error {
	n := &corev1.Node{}
	if err := l.Client.Get(ctx, client.ObjectKey{Name: l.NodeName}, n); err != nil {
		return err
	}
	c := l.Prober.Probe(n)
	want := c.Labels()
	patch := client.MergeFrom(n.DeepCopy())
	changed := false
	for _, k := range []string{v1.LabelCheckpointRestore, v1.LabelRuntime, v1.LabelRuntimeVersion, v1.LabelCRIUVersion} {
		v, ok := want[k]
		if cur, has := n.Labels[k]; (ok && cur != v) || (!ok && has) {
			changed = true
			if ok {
				n.Labels[k] = v
			} else {
				delete(n.Labels, k)
			}
		}
	}
	if !changed {
		return nil
	}
	log.FromContext(ctx).Info("node checkpoint/restore capability", "node", l.NodeName, "canRestore", c.CanRestore, "why", c.Why)
	return l.Client.Patch(ctx, n, patch)
}
