package agent

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

func node(runtime string) *corev1.Node {
	return &corev1.Node{Status: corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{ContainerRuntimeVersion: runtime}}}
}

func TestProbe(t *testing.T) {
	root := t.TempDir()
	write := func(rel, content string) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	criu := func() (string, error) { return "4.0", nil }
	noCRIU := func() (string, error) { return "", errors.New("executable file not found") }
	write("etc/crio/crio.conf.d/10-criu.conf", "[crio.runtime]\nenable_criu_support = true\n")

	for _, tc := range []struct {
		name    string
		runtime string
		root    string
		criu    func() (string, error)
		restore bool
	}{
		{"sandbox node", "ms2m-sim://0.1.0", root, criu, true},
		{"sandbox node without restore", "ms2m-sim://0.1.0 (restore disabled)", root, criu, false},
		{"cri-o with criu support and criu", "cri-o://1.31.0", root, criu, true},
		{"cri-o without criu binary", "cri-o://1.31.0", root, noCRIU, false},
		{"cri-o with criu support off", "cri-o://1.31.0", t.TempDir(), criu, false},
		{"containerd with restore off (its default)", "containerd://2.0.0", root, criu, false},
		{"docker", "docker://27.0.0", root, criu, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Prober{HostRoot: tc.root, CRIUVersion: tc.criu}.Probe(node(tc.runtime))
			if c.CanRestore != tc.restore {
				t.Fatalf("CanRestore = %v (%s), want %v", c.CanRestore, c.Why, tc.restore)
			}
			l := c.Labels()
			if want := map[bool]string{true: "true", false: "false"}[tc.restore]; l[v1.LabelCheckpointRestore] != want {
				t.Fatalf("labels %v", l)
			}
			if !tc.restore && c.Why == "" {
				t.Error("a node that cannot restore must say why")
			}
		})
	}
}
