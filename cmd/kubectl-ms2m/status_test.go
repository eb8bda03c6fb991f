package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// event records what the controller's recorder would about m.
func event(t *testing.T, m *v1.StatefulMigration, reason, msg string, at time.Time) {
	t.Helper()
	e := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Namespace: m.Namespace, GenerateName: m.Name + "."},
		InvolvedObject: corev1.ObjectReference{Kind: "StatefulMigration", APIVersion: v1.GroupVersion.String(), Namespace: m.Namespace, Name: m.Name, UID: m.UID},
		Reason:         reason, Message: msg, Type: corev1.EventTypeNormal,
		FirstTimestamp: metav1.NewTime(at), LastTimestamp: metav1.NewTime(at), Count: 1,
		Source: corev1.EventSource{Component: "ms2m-controller"},
	}
	if err := env.Client.Create(context.Background(), e); err != nil {
		t.Fatal(err)
	}
}

func TestStatusSummary(t *testing.T) {
	ns := namespace(t)
	m := newMigration(t, ns, "done", withStatus(completedStatus()))
	other := newMigration(t, ns, "other")
	now := time.Now()
	// Ages of 10 minutes and more print in whole minutes, so a slow run
	// (seconds between now and the command) prints the same.
	event(t, m, "Checkpointing", "pausing orders-0 to checkpoint it, then restoring on node-b", now.Add(-20*time.Minute))
	event(t, m, "Completed", "orders-0 now runs as orders-0-ms2m-x1 on node-b", now.Add(-15*time.Minute))
	event(t, other, "SourcePodNotFound", "an event of another migration", now)

	out, stderr, code := kms2m(t, "status", "done", "-n", ns)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	expectContains(t, "status", out,
		"Name: done",
		"Phase: Completed",
		"Result: Completed in 3.000s: downtime 41.0ms (checkpoint pause 29.0ms + handover 12.0ms), 2400 messages replayed, handed over at the fence",
		"Source: pod orders-0 on node node-a",
		"Target: node node-b (chosen by the controller), pod orders-0-ms2m-x1",
		"Strategy: ShadowPod",
		"Checkpoint image: registry.example.com/ckpt@sha256:abab",
		"(12Mi)",
		"Checkpoint offsets (O): orders/0=120 orders/1=98",
		"Fence offsets (F): orders/0=140 orders/1=101",
		"Downtime: 41.0ms (checkpoint pause 29.0ms + handover 12.0ms, measured by the sidecars)",
		"Handover: fence call 2.0ms, controller 0.1ms, handover call 9.0ms",
		"PHASE STARTED DURATION",
		"Pending +0.0ms 500.0ms",
		"Replaying +2.000s 500.0ms",
		"Completed +3.000s -",
		"TYPE STATUS REASON MESSAGE",
		"HandedOver True Succeeded target live from the fence offsets",
		"AGE TYPE REASON MESSAGE",
		"20m Normal Checkpointing pausing orders-0",
		"15m Normal Completed orders-0 now runs as orders-0-ms2m-x1 on node-b",
	)
	if strings.Contains(out, "another migration") {
		t.Errorf("status shows another migration's event:\n%s", out)
	}
	if strings.Index(out, "Checkpointing pausing") > strings.Index(out, "Completed orders-0 now runs") {
		t.Errorf("events are not oldest first:\n%s", out)
	}
}

func TestStatusOfARunningMigration(t *testing.T) {
	ns := namespace(t)
	st := replayingStatus()
	st.FailureReason = ""
	newMigration(t, ns, "replaying", withTarget("node-c"), withStatus(st))
	out, _, code := kms2m(t, "status", "replaying", "-n", ns)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	expectContains(t, "status", out, "Phase: Replaying, running for", "Target: node node-c (requested)",
		"Replay: lag 321, μ 0/s, λ 0/s, 10 replayed", "so far", "Events: <none>")
}

func TestStatusOutputRoundTrips(t *testing.T) {
	ns := namespace(t)
	newMigration(t, ns, "done", withStatus(completedStatus()))
	want := migrations(t, ns)["done"]
	for _, format := range []string{"json", "yaml"} {
		out, stderr, code := kms2m(t, "status", "done", "-n", ns, "-o", format)
		if code != 0 {
			t.Fatalf("-o %s: exit %d: %s", format, code, stderr)
		}
		got := &v1.StatefulMigration{}
		var err error
		if format == "json" {
			err = json.Unmarshal([]byte(out), got)
		} else {
			err = yaml.Unmarshal([]byte(out), got)
		}
		if err != nil {
			t.Fatalf("-o %s does not parse: %v\n%s", format, err, out)
		}
		if got.Kind != "StatefulMigration" || got.UID != want.UID || !equality.Semantic.DeepEqual(got.Status, want.Status) || !equality.Semantic.DeepEqual(got.Spec, want.Spec) {
			t.Errorf("-o %s does not round-trip:\n%s", format, out)
		}
	}
}

func TestStatusOfAMissingMigration(t *testing.T) {
	ns := namespace(t)
	_, stderr, code := kms2m(t, "status", "nope", "-n", ns)
	if code != 1 || !strings.Contains(stderr, `StatefulMigration "nope" not found in namespace "`+ns+`"`) {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}
