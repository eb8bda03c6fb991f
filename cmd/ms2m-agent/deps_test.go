package main

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// forbiddenDeps are the packages of the control plane (and the Kafka client
// only it uses). The agent runs on every node: linking them costs each node
// memory and image size and widens what a CVE in them reaches, for code the
// agent never calls. Shared pieces belong in a leaf package such as
// pkg/clientconfig.
var forbiddenDeps = []string{
	"github.com/ms2m/ms2m/pkg/manager",
	"github.com/ms2m/ms2m/pkg/controllers",
	"github.com/ms2m/ms2m/pkg/replay",
	"github.com/ms2m/ms2m/webhooks",
	"github.com/ms2m/ms2m/scheduler",
	"github.com/segmentio/kafka-go",
}

func TestAgentLinksNoControlPlane(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list the agent's dependencies:", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list -deps: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbiddenDeps {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("ms2m-agent links %s (forbidden: %s)", dep, f)
			}
		}
	}
}
