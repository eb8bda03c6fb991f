package scheduler

import (
	"os"
	"path/filepath"
	"testing"

	configv1 "k8s.io/kube-scheduler/config/v1"
	"sigs.k8s.io/yaml"

	"github.com/ms2m/ms2m/internal/testenv"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// The chart's example configuration must be one the scheduler reads (no
// unknown field) and must match what the extender serves.
func TestExampleSchedulerConfiguration(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "charts", "ms2m", "examples", "kube-scheduler-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg configv1.KubeSchedulerConfiguration
	if err := yaml.UnmarshalStrict(raw, &cfg); err != nil {
		t.Fatalf("not a valid KubeSchedulerConfiguration: %v", err)
	}
	if len(cfg.Extenders) != 1 {
		t.Fatalf("want one extender, got %d", len(cfg.Extenders))
	}
	x := cfg.Extenders[0]
	if "/"+x.FilterVerb != FilterPath || "/"+x.PrioritizeVerb != PrioritizePath || !x.NodeCacheCapable {
		t.Errorf("verbs %q/%q (nodeCacheCapable %v) do not match the extender's %s and %s", x.FilterVerb, x.PrioritizeVerb, x.NodeCacheCapable, FilterPath, PrioritizePath)
	}
	if len(x.ManagedResources) != 1 || x.ManagedResources[0].Name != v1.ResourceCheckpointRestore || !x.ManagedResources[0].IgnoredByScheduler {
		t.Errorf("managedResources %+v; want %s ignored by the scheduler", x.ManagedResources, v1.ResourceCheckpointRestore)
	}
}
