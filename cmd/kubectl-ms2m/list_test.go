package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/yaml"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

func replayingStatus() v1.StatefulMigrationStatus {
	st := v1.StatefulMigrationStatus{SourceNode: "node-a", TargetNode: "node-c", Replay: &v1.ReplayProgress{Lag: 321, Replayed: 10}}
	enter(&st, v1.PhasePending, 0)
	enter(&st, v1.PhaseReplaying, time.Second)
	return st
}

func TestListTable(t *testing.T) {
	ns, other := namespace(t), namespace(t)
	newMigration(t, ns, "done", withStatus(completedStatus()))
	newMigration(t, ns, "replaying", withStatus(replayingStatus()))
	newMigration(t, ns, "new", withTarget("node-d"))
	newMigration(t, other, "elsewhere")

	out, stderr, code := kms2m(t, "list", "-n", ns)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := []string{
		"NAME PHASE SOURCE POD SOURCE NODE TARGET NODE DOWNTIME LAG AGE",
		"done Completed orders-0 node-a node-b 41.0ms <none>",
		"new <none> orders-0 <none> node-d <none> <none>",
		"replaying Replaying orders-0 node-a node-c <none> 321",
	}
	got := strings.Split(strings.TrimSpace(squeeze(out)), "\n")
	if len(got) != len(want) {
		t.Fatalf("table has %d lines, want %d:\n%s", len(got), len(want), out)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("line %d = %q, want it to start with %q", i, got[i], want[i])
		}
	}

	out, _, code = kms2m(t, "list", "--all-namespaces")
	if code != 0 {
		t.Fatalf("list -A: exit %d", code)
	}
	expectContains(t, "list -A", out, "NAMESPACE NAME PHASE", ns+" done Completed", other+" elsewhere <none>")

	empty := namespace(t)
	out, stderr, code = kms2m(t, "list", "-n", empty)
	if code != 0 || out != "" || !strings.Contains(stderr, "No migrations found in "+empty+" namespace.") {
		t.Errorf("empty namespace: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}

func TestListOutputRoundTrips(t *testing.T) {
	ns := namespace(t)
	newMigration(t, ns, "done", withStatus(completedStatus()))
	newMigration(t, ns, "replaying", withStatus(replayingStatus()))
	stored := migrations(t, ns)

	for _, tc := range []struct {
		format    string
		unmarshal func([]byte, any) error
	}{{"json", json.Unmarshal}, {"yaml", func(b []byte, v any) error { return yaml.Unmarshal(b, v) }}} {
		t.Run(tc.format, func(t *testing.T) {
			out, stderr, code := kms2m(t, "list", "-n", ns, "-o", tc.format)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			list := &v1.StatefulMigrationList{}
			if err := tc.unmarshal([]byte(out), list); err != nil {
				t.Fatalf("output does not parse as a StatefulMigrationList: %v\n%s", err, out)
			}
			if list.Kind != "StatefulMigrationList" || list.APIVersion != v1.GroupVersion.String() {
				t.Errorf("list kind %q apiVersion %q", list.Kind, list.APIVersion)
			}
			if len(list.Items) != len(stored) {
				t.Fatalf("%d items, want %d", len(list.Items), len(stored))
			}
			for _, m := range list.Items {
				want := stored[m.Name]
				if m.Kind != "StatefulMigration" || m.APIVersion != v1.GroupVersion.String() {
					t.Errorf("%s: kind %q apiVersion %q", m.Name, m.Kind, m.APIVersion)
				}
				if m.UID != want.UID || !equality.Semantic.DeepEqual(m.Spec, want.Spec) || !equality.Semantic.DeepEqual(m.Status, want.Status) {
					t.Errorf("%s does not round-trip:\ngot  %+v\nwant %+v", m.Name, m.Status, want.Status)
				}
			}
		})
	}
}

func TestOutputFormatIsChecked(t *testing.T) {
	for _, cmd := range [][]string{{"list"}, {"status", "any"}} {
		_, stderr, code := kms2m(t, append(cmd, "-o", "wide")...)
		if code != 1 || !strings.Contains(stderr, `unknown output format "wide": use -o json or -o yaml`) {
			t.Errorf("%v -o wide: exit %d, stderr %q", cmd, code, stderr)
		}
	}
}
