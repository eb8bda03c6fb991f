package kubelet

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func cond(st corev1.PodStatus, t corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range st.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return ""
}

func TestPodPhase(t *testing.T) {
	running := ctrState{started: true, running: true}
	ok := ctrState{started: true, exited: true}
	failed := ctrState{started: true, exited: true, exitCode: 2}
	for _, tc := range []struct {
		name   string
		policy corev1.RestartPolicy
		ctrs   []ctrState
		want   corev1.PodPhase
	}{
		{"not started", corev1.RestartPolicyAlways, []ctrState{running, {}}, corev1.PodPending},
		{"running", corev1.RestartPolicyAlways, []ctrState{running}, corev1.PodRunning},
		{"always restarts a completed container", corev1.RestartPolicyAlways, []ctrState{ok}, corev1.PodRunning},
		{"never: success", corev1.RestartPolicyNever, []ctrState{ok, ok}, corev1.PodSucceeded},
		{"never: one failed", corev1.RestartPolicyNever, []ctrState{ok, failed}, corev1.PodFailed},
		{"onfailure restarts the failed one", corev1.RestartPolicyOnFailure, []ctrState{ok, failed}, corev1.PodRunning},
		{"onfailure: success", corev1.RestartPolicyOnFailure, []ctrState{ok}, corev1.PodSucceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := podPhase(tc.policy, tc.ctrs); got != tc.want {
				t.Errorf("phase = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestReadinessFollowsContainersAndGates(t *testing.T) {
	now := metav1.NewTime(time.Unix(100, 0))
	gate := corev1.PodConditionType("migration.ms2m.io/handed-over")
	pod := &corev1.Pod{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyAlways, ReadinessGates: []corev1.PodReadinessGate{{ConditionType: gate}}}}
	ready := ctrState{name: "app", started: true, running: true, ready: true}
	notReady := ctrState{name: "side", started: true, running: true}

	st := podStatus(pod, []ctrState{ready, notReady}, nil, "127.1.0.2", "127.2.0.1", now.Time, now)
	if cond(st, corev1.PodReady) != corev1.ConditionFalse || cond(st, corev1.ContainersReady) != corev1.ConditionFalse {
		t.Fatalf("pod with an unready container reported ready: %+v", st.Conditions)
	}
	st = podStatus(pod, []ctrState{ready, ready}, nil, "127.1.0.2", "127.2.0.1", now.Time, now)
	if cond(st, corev1.ContainersReady) != corev1.ConditionTrue || cond(st, corev1.PodReady) != corev1.ConditionFalse {
		t.Fatalf("a pod whose readiness gate is not True must not be Ready: %+v", st.Conditions)
	}
	pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: gate, Status: corev1.ConditionTrue})
	st = podStatus(pod, []ctrState{ready, ready}, nil, "127.1.0.2", "127.2.0.1", now.Time, now)
	if cond(st, corev1.PodReady) != corev1.ConditionTrue || cond(st, gate) != corev1.ConditionTrue {
		t.Fatalf("gate True and containers ready, pod not Ready (or gate dropped): %+v", st.Conditions)
	}
	if st.PodIP != "127.1.0.2" || st.Phase != corev1.PodRunning || len(st.ContainerStatuses) != 2 {
		t.Fatalf("status %+v", st)
	}
}

func TestContainerStatusStates(t *testing.T) {
	crash := ctrState{name: "c", started: true, exited: true, exitCode: 1, waiting: "CrashLoopBackOff", restartCount: 3,
		lastTerm: &corev1.ContainerStateTerminated{ExitCode: 1}}
	s := crash.status()
	if s.State.Waiting == nil || s.State.Waiting.Reason != "CrashLoopBackOff" || s.RestartCount != 3 || s.LastTerminationState.Terminated == nil {
		t.Fatalf("crash-looping container status %+v", s)
	}
	done := ctrState{name: "c", started: true, exited: true}
	if s := done.status(); s.State.Terminated == nil || s.State.Terminated.Reason != "Completed" {
		t.Fatalf("completed container status %+v", s)
	}
}
