package migration

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	crevent "sigs.k8s.io/controller-runtime/pkg/event"
)

func nodeWith(conds ...corev1.NodeCondition) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-2"}, Status: corev1.NodeStatus{Conditions: conds}}
}

func readyCond(s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
	return corev1.NodeCondition{Type: corev1.NodeReady, Status: s, Reason: reason, Message: msg,
		LastTransitionTime: metav1.NewTime(time.Date(2026, 11, 26, 4, 31, 2, 0, time.UTC))}
}

func TestNodeNotReady(t *testing.T) {
	pressure := corev1.NodeCondition{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionTrue}
	for _, tc := range []struct {
		name string
		node *corev1.Node
		want string // "" for Ready, else a part of the explanation
	}{
		{"Ready", nodeWith(pressure, readyCond(corev1.ConditionTrue, "KubeletReady", "")), ""},
		{"kubelet unreachable: the node lifecycle controller's verdict", nodeWith(readyCond(corev1.ConditionUnknown, "NodeStatusUnknown", "Kubelet stopped posting node status.")),
			"Ready=Unknown since 2026-11-26T04:31:02Z (NodeStatusUnknown: Kubelet stopped posting node status.)"},
		{"the kubelet reports not ready", nodeWith(readyCond(corev1.ConditionFalse, "KubeletNotReady", "container runtime is down")),
			"Ready=False since 2026-11-26T04:31:02Z (KubeletNotReady: container runtime is down)"},
		{"never reported", nodeWith(pressure), "no Ready condition"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := nodeNotReady(tc.node)
			if (got == "") != (tc.want == "") || !strings.Contains(got, tc.want) {
				t.Fatalf("nodeNotReady = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestReadinessChanged(t *testing.T) {
	ready := nodeWith(readyCond(corev1.ConditionTrue, "KubeletReady", ""))
	unknown := nodeWith(readyCond(corev1.ConditionUnknown, "NodeStatusUnknown", ""))
	notReady := nodeWith(readyCond(corev1.ConditionFalse, "KubeletNotReady", ""))
	heartbeat := ready.DeepCopy()
	heartbeat.Status.Conditions[0].LastHeartbeatTime = metav1.Now()
	for _, tc := range []struct {
		name     string
		old, cur *corev1.Node
		want     bool
	}{
		{"goes NotReady", ready, unknown, true},
		{"comes back", unknown, ready, true},
		{"a heartbeat", ready, heartbeat, false},
		{"stays not ready, Unknown to False", unknown, notReady, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := readinessChanged.Update(crevent.UpdateEvent{ObjectOld: tc.old, ObjectNew: tc.cur}); got != tc.want {
				t.Fatalf("passes %v, want %v", got, tc.want)
			}
		})
	}
	if !readinessChanged.Delete(crevent.DeleteEvent{Object: ready}) {
		t.Error("a deleted node must reach the migrations targeting it")
	}
}
