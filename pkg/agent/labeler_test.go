package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// TestLabelerReportsChanges: the labels follow the probe, and the reason
// reaches the node's Events once per change, not once per probe.
func TestLabelerReportsChanges(t *testing.T) {
	ctx := context.Background()
	root := hostTree(t, criuDeb, crioPackaged)
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"keep": "me"}},
		Status: corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{ContainerRuntimeVersion: "cri-o://1.34.14"}}}
	c := fake.NewClientBuilder().WithObjects(n).Build()
	rec := record.NewFakeRecorder(10)
	l := &Labeler{Client: c, NodeName: "n1", Prober: Prober{HostRoot: root}, Recorder: rec}

	expect := func(labels map[string]string, events ...string) {
		t.Helper()
		if err := l.label(ctx); err != nil {
			t.Fatal(err)
		}
		got := &corev1.Node{}
		if err := c.Get(ctx, client.ObjectKey{Name: "n1"}, got); err != nil {
			t.Fatal(err)
		}
		for k, v := range labels {
			if got.Labels[k] != v {
				t.Errorf("label %s = %q, want %q (labels %v)", k, got.Labels[k], v, got.Labels)
			}
		}
		for _, want := range events {
			select {
			case e := <-rec.Events:
				if !strings.HasPrefix(e, want) {
					t.Errorf("event %q, want one starting %q", e, want)
				}
			default:
				t.Errorf("no event, want %q", want)
			}
		}
		select {
		case e := <-rec.Events:
			t.Errorf("unexpected event %q", e)
		default:
		}
	}

	expect(map[string]string{v1.LabelCheckpointRestore: "false", "keep": "me"},
		"Warning CheckpointRestoreUnavailable CRI-O 1.34.14 defaults [crio.checkpoint_restore] container_level_enabled")
	expect(map[string]string{v1.LabelCheckpointRestore: "false"}) // the same outcome: no new Event

	if err := os.WriteFile(filepath.Join(root, "etc/crio/crio.conf.d/20-ms2m.conf"),
		[]byte("[crio.checkpoint_restore]\ncontainer_level_enabled = \"checkpoint_restore\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	expect(map[string]string{v1.LabelCheckpointRestore: "true", v1.LabelRuntime: "cri-o", v1.LabelRuntimeVersion: "1.34.14", v1.LabelCRIUVersion: "4.1", "keep": "me"},
		"Normal CheckpointRestoreAvailable restores checkpoints: runtime cri-o 1.34.14, CRIU 4.1 (/usr/sbin/criu, version from dpkg)")

	if err := os.Remove(filepath.Join(root, "usr/sbin/criu")); err != nil {
		t.Fatal(err)
	}
	expect(map[string]string{v1.LabelCheckpointRestore: "false", v1.LabelCRIUVersion: "", v1.LabelRuntime: ""},
		"Warning CheckpointRestoreUnavailable criu not found")
}
