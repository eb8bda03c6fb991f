// Package terraform_test checks the Terraform configuration without a cloud
// account or provider downloads: every .tf file parses, every variable used
// is declared and documented and every declared one is used, the chart
// values it sets exist in the chart's schema, the node setup script is
// valid shell and configures containerd as the agent checks it, the agent
// pushes checkpoint images and the manager deletes them through Workload
// Identity, each with its own Google service account, a push-only or
// delete-only role on the checkpoint repository and no key
// (identity_test.go), and `terraform fmt` has nothing to change.
package terraform_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	corev1 "k8s.io/api/core/v1"

	"github.com/ms2m/ms2m/internal/testenv"
	"github.com/ms2m/ms2m/pkg/agent"
	v1alpha1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

func dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

// config is every .tf file of the module, parsed.
type config struct {
	files map[string]*hclsyntax.Body
}

func load(t *testing.T) config {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir(), "*.tf"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no .tf files in %s: %v", dir(), err)
	}
	p := hclparse.NewParser()
	c := config{files: map[string]*hclsyntax.Body{}}
	for _, path := range paths {
		f, diags := p.ParseHCLFile(path)
		if diags.HasErrors() {
			t.Fatalf("%s does not parse: %s", filepath.Base(path), diags.Error())
		}
		c.files[filepath.Base(path)] = f.Body.(*hclsyntax.Body)
	}
	return c
}

// blocks returns the top-level blocks of a type, by file.
func (c config) blocks(typ string) map[string][]*hclsyntax.Block {
	out := map[string][]*hclsyntax.Block{}
	for name, body := range c.files {
		for _, b := range body.Blocks {
			if b.Type == typ {
				out[name] = append(out[name], b)
			}
		}
	}
	return out
}

// stringAttr evaluates a literal string attribute ("" if absent or not a
// literal).
func stringAttr(b *hclsyntax.Body, name string) string {
	a, ok := b.Attributes[name]
	if !ok {
		return ""
	}
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() || v.Type() != cty.String || v.IsNull() {
		return ""
	}
	return v.AsString()
}

// references collects the names used as root.NAME (var.x, local.y) outside
// the blocks of type skip (a variable's own validation does not use it).
func (c config) references(root, skip string) map[string][]string {
	used := map[string][]string{}
	for file, body := range c.files {
		for _, b := range body.Blocks {
			if b.Type == skip {
				continue
			}
			_ = hclsyntax.VisitAll(b.Body, func(n hclsyntax.Node) hcl.Diagnostics {
				e, ok := n.(*hclsyntax.ScopeTraversalExpr)
				if !ok || e.Traversal.RootName() != root || len(e.Traversal) < 2 {
					return nil
				}
				if attr, ok := e.Traversal[1].(hcl.TraverseAttr); ok {
					used[attr.Name] = append(used[attr.Name], fmt.Sprintf("%s:%d", file, e.SrcRange.Start.Line))
				}
				return nil
			})
		}
	}
	return used
}

func TestVariablesAreDeclaredDocumentedAndUsed(t *testing.T) {
	c := load(t)
	declared := map[string]bool{}
	for file, blocks := range c.blocks("variable") {
		for _, b := range blocks {
			name := b.Labels[0]
			if declared[name] {
				t.Errorf("variable %q is declared twice", name)
			}
			declared[name] = true
			if len(stringAttr(b.Body, "description")) < 20 {
				t.Errorf("%s: variable %q needs a description that says what it does", file, name)
			}
			if _, ok := b.Body.Attributes["type"]; !ok {
				t.Errorf("%s: variable %q has no type", file, name)
			}
		}
	}
	used := c.references("var", "variable")
	for name, where := range used {
		if !declared[name] {
			t.Errorf("var.%s is used (%s) but not declared", name, strings.Join(where, ", "))
		}
	}
	for name := range declared {
		if len(used[name]) == 0 {
			t.Errorf("variable %q is declared but never used", name)
		}
	}
}

func TestLocalsAndOutputs(t *testing.T) {
	c := load(t)
	declared := map[string]bool{}
	for _, blocks := range c.blocks("locals") {
		for _, b := range blocks {
			for name := range b.Body.Attributes {
				declared[name] = true
			}
		}
	}
	for name, where := range c.references("local", "") {
		if !declared[name] {
			t.Errorf("local.%s is used (%s) but not declared", name, strings.Join(where, ", "))
		}
	}
	for file, blocks := range c.blocks("output") {
		for _, b := range blocks {
			if stringAttr(b.Body, "description") == "" {
				t.Errorf("%s: output %q has no description", file, b.Labels[0])
			}
		}
	}
	if len(c.blocks("output")) == 0 {
		t.Error("the module has no outputs")
	}
	var kubeconfig bool
	for _, blocks := range c.blocks("output") {
		for _, b := range blocks {
			kubeconfig = kubeconfig || b.Labels[0] == "kubeconfig"
		}
	}
	if !kubeconfig {
		t.Error("the module does not output a kubeconfig")
	}
}

// Every resource and data source belongs to a provider the module requires
// (init would otherwise fetch an unpinned one).
func TestResourcesUseRequiredProviders(t *testing.T) {
	c := load(t)
	required := map[string]bool{}
	for _, blocks := range c.blocks("terraform") {
		for _, b := range blocks {
			for _, rp := range b.Body.Blocks {
				if rp.Type != "required_providers" {
					continue
				}
				for name, attr := range rp.Body.Attributes {
					v, diags := attr.Expr.Value(nil)
					if diags.HasErrors() || !v.Type().IsObjectType() || !v.Type().HasAttribute("version") {
						t.Errorf("required provider %s has no version constraint", name)
					}
					required[name] = true
				}
			}
		}
	}
	for _, typ := range []string{"resource", "data"} {
		for file, blocks := range c.blocks(typ) {
			for _, b := range blocks {
				provider, _, _ := strings.Cut(b.Labels[0], "_")
				if !required[provider] {
					t.Errorf("%s: %s %s.%s uses provider %q, which required_providers does not pin", file, typ, b.Labels[0], b.Labels[1], provider)
				}
			}
		}
	}
}

// The values the Terraform passes to the chart are values the chart has:
// a misspelt key would otherwise be refused only at apply time.
func TestHelmValuesExistInTheChart(t *testing.T) {
	c := load(t)
	raw, err := os.ReadFile(filepath.Join(dir(), "..", "charts", "ms2m", "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	var checked int
	for _, blocks := range c.blocks("resource") {
		for _, b := range blocks {
			if b.Labels[0] != "helm_release" {
				continue
			}
			values, ok := b.Body.Attributes["values"]
			if !ok {
				continue
			}
			for _, item := range values.Expr.(*hclsyntax.TupleConsExpr).Exprs {
				call, ok := item.(*hclsyntax.FunctionCallExpr)
				if !ok || call.Name != "yamlencode" || len(call.Args) != 1 {
					t.Fatalf("helm_release %s: values must be yamlencode({...}) so they can be checked", b.Labels[1])
				}
				checked += checkValues(t, "", call.Args[0], schema)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no helm_release sets any chart value")
	}
}

func checkValues(t *testing.T, path string, expr hclsyntax.Expression, schema map[string]any) int {
	t.Helper()
	obj, ok := expr.(*hclsyntax.ObjectConsExpr)
	if !ok {
		return 0
	}
	props, _ := schema["properties"].(map[string]any)
	n := 0
	for _, item := range obj.Items {
		k, diags := item.KeyExpr.Value(nil)
		if diags.HasErrors() || k.Type() != cty.String {
			continue // a computed key inside a free-form map
		}
		key := k.AsString()
		p := strings.TrimPrefix(path+"."+key, ".")
		sub, ok := props[key].(map[string]any)
		if !ok {
			t.Errorf("the Terraform sets chart value %s, which values.schema.json does not have", p)
			continue
		}
		n++
		if sub["properties"] != nil {
			n += checkValues(t, p, item.ValueExpr, sub)
		}
	}
	return n
}

// The node setup script is handed to /bin/sh: it must be valid shell.
func TestNodeSetupScriptIsValidShell(t *testing.T) {
	scripts, _ := filepath.Glob(filepath.Join(dir(), "scripts", "*.sh"))
	if len(scripts) == 0 {
		t.Fatal("no scripts/*.sh")
	}
	for _, s := range scripts {
		if out, err := exec.Command("sh", "-n", s).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", filepath.Base(s), err, out)
		}
	}
}

// TestFormatted runs the pinned terraform's `fmt -check`, installing it into
// the cache from the Go module proxy when it is missing.
func TestFormatted(t *testing.T) {
	terraform, err := testenv.GoTool("terraform")
	if err != nil {
		t.Fatal(err)
	}
	fmtCmd := exec.Command(terraform, "fmt", "-check", "-recursive", "-diff", ".")
	fmtCmd.Dir = dir()
	// No user CLI configuration: it could only add warnings.
	fmtCmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+os.DevNull, "CHECKPOINT_DISABLE=1")
	if out, err := fmtCmd.CombinedOutput(); err != nil {
		t.Errorf("terraform fmt would change files (run `terraform fmt -recursive terraform/`): %v\n%s", err, out)
	}
}

// The node setup leaves containerd's configuration as the agent wants it:
// the agent, probing a node whose config.toml the script edited, finds
// restore on (the runtime's restore switch and criu, nothing missing), and
// the switch is once in the CRI section of the file's version, where
// containerd reads it. A second run changes nothing.
func TestNodeSetupEnablesWhatTheAgentChecks(t *testing.T) {
	const (
		v3Section = `[plugins."io.containerd.cri.v1.runtime"]`
		v2Section = `[plugins."io.containerd.grpc.v1.cri"]`
	)
	for _, tc := range []struct {
		name, config, section string
	}{
		{"version 2, as GKE writes it", `version = 2
required_plugins = ["io.containerd.grpc.v1.cri"]
oom_score = -999

[debug]
  level = "info"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  max_container_log_line_size = 262144
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/home/kubernetes/bin"
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
`, v2Section},
		{"version 2, the CRI section last", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"pause\"\n", v2Section},
		{"version 3, restore and CRIU turned off", `version = 3 # containerd 2.x
[plugins.'io.containerd.cri.v1.runtime']
  enable_criu=false
  enable_experimental_restore_via_create = false # off
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
`, "[plugins.'io.containerd.cri.v1.runtime']"},
		{"version 3 without the CRI runtime section", "version = 3\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_tcp_service = true\n", v3Section},
	} {
		t.Run(tc.name, func(t *testing.T) {
			edited := restoreConfig(t, tc.config)
			if again := restoreConfig(t, edited); again != edited {
				t.Errorf("a second run changes the configuration:\n%s\nto\n%s", edited, again)
			}
			if n := switchesIn(edited, tc.section); n != 1 {
				t.Errorf("enable_experimental_restore_via_create = true is %d times in %s:\n%s", n, tc.section, edited)
			}
			if n := strings.Count(edited, "enable_experimental_restore_via_create"); n != 1 {
				t.Errorf("enable_experimental_restore_via_create is %d times in the file:\n%s", n, edited)
			}
			root := t.TempDir()
			for p, data := range map[string]string{"etc/containerd/config.toml": edited, "usr/sbin/criu": "#!/bin/true\n"} {
				if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(root, p), []byte(data), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for _, runtime := range []string{"containerd://2.1.4", "containerd://2.2.7", "containerd://2.3.4"} {
				n := &corev1.Node{Status: corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{ContainerRuntimeVersion: runtime}}}
				if c := (agent.Prober{HostRoot: root}).Probe(n); !c.CanRestore {
					t.Errorf("%s: the agent finds no restore after the node setup: %s\n%s", runtime, c.Why, edited)
				}
			}
		})
	}
	t.Run("version 1 is refused", func(t *testing.T) {
		cmd := exec.Command("sh", filepath.Join(dir(), "scripts", "enable-checkpoint-restore.sh"), "restore-config")
		cmd.Stdin = strings.NewReader("[plugins.cri]\n  sandbox_image = \"pause\"\n")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "only versions 2 and 3") {
			t.Errorf("a version 1 file: err %v, output %s", err, out)
		}
	})
}

// restoreConfig runs the node setup's edit of containerd's configuration.
func restoreConfig(t *testing.T, config string) string {
	t.Helper()
	cmd := exec.Command("sh", filepath.Join(dir(), "scripts", "enable-checkpoint-restore.sh"), "restore-config")
	cmd.Stdin = strings.NewReader(config)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("restore-config: %v\n%s", err, stderr.String())
	}
	return string(out)
}

// switchesIn counts the lines setting enable_experimental_restore_via_create
// to true between the header line section and the next header.
func switchesIn(config, section string) int {
	n, in := 0, false
	for _, line := range strings.Split(config, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			in = strings.HasPrefix(line, section)
			continue
		}
		if in && line == "enable_experimental_restore_via_create = true" {
			n++
		}
	}
	return n
}

// The node setup's CRIU configuration is what the agent reports as a node
// that checkpoints connected TCP sockets and restores them closed; the
// edit keeps what was there and changes nothing a second time.
func TestNodeSetupAllowsConnectionsAsTheAgentReadsThem(t *testing.T) {
	for _, in := range []string{"", "tcp-established\n", "# tcp-close\nlog-file /var/log/criu.log\n", "tcp-close\n"} {
		out := criuConfig(t, in)
		if again := criuConfig(t, out); again != out {
			t.Errorf("a second run changes %q to %q", out, again)
		}
		for line := range strings.Lines(in) {
			if !strings.Contains(out, line) {
				t.Errorf("the edit lost %q: %q", line, out)
			}
		}
		root := t.TempDir()
		for p, data := range map[string]string{"etc/criu/runc.conf": out, "usr/sbin/criu": "#!/bin/true\n",
			"etc/containerd/config.toml": "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\"]\n  enable_experimental_restore_via_create = true\n"} {
			if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, p), []byte(data), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		n := &corev1.Node{Status: corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{ContainerRuntimeVersion: "containerd://2.2.7"}}}
		c := (agent.Prober{HostRoot: root}).Probe(n)
		if got := c.Labels()[v1alpha1.LabelCRIUConnectedTCP]; !c.CanRestore || got != "tcp-close" {
			t.Errorf("from %q: the agent labels %s=%q (restore %v, %s), want tcp-close", in, v1alpha1.LabelCRIUConnectedTCP, got, c.CanRestore, c.Why)
		}
	}
}

// criuConfig runs the node setup's edit of the CRIU configuration.
func criuConfig(t *testing.T, in string) string {
	t.Helper()
	cmd := exec.Command("sh", filepath.Join(dir(), "scripts", "enable-checkpoint-restore.sh"), "criu-config")
	cmd.Stdin = strings.NewReader(in)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
