package kubelet

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ctrState is one container as the runtime sees it: the input of the pure
// status computation below.
type ctrState struct {
	name         string
	image        string
	imageID      string
	containerID  string
	running      bool
	ready        bool
	started      bool // the process (or processless container) has started at least once
	startedAt    time.Time
	exited       bool
	exitCode     int
	finishedAt   time.Time
	restartCount int32
	waiting      string // reason while not running, e.g. ContainerCreating, CrashLoopBackOff
	message      string
	lastTerm     *corev1.ContainerStateTerminated
}

func (c ctrState) status() corev1.ContainerStatus {
	s := corev1.ContainerStatus{
		Name: c.name, Image: c.image, ImageID: c.imageID, ContainerID: c.containerID,
		Ready: c.running && c.ready, RestartCount: c.restartCount, Started: &c.running,
	}
	switch {
	case c.running:
		s.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(c.startedAt)}
	case c.exited && c.waiting == "":
		reason := "Completed"
		if c.exitCode != 0 {
			reason = "Error"
		}
		s.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: int32(c.exitCode), Reason: reason, Message: c.message,
			StartedAt: metav1.NewTime(c.startedAt), FinishedAt: metav1.NewTime(c.finishedAt), ContainerID: c.containerID}
	default:
		reason := c.waiting
		if reason == "" {
			reason = "ContainerCreating"
		}
		s.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: c.message}
	}
	if c.lastTerm != nil {
		s.LastTerminationState.Terminated = c.lastTerm
	}
	return s
}

// podPhase follows the kubelet's rules: Pending until every container has
// started once; Succeeded/Failed when every container has exited and none
// will restart; Running otherwise.
func podPhase(policy corev1.RestartPolicy, ctrs []ctrState) corev1.PodPhase {
	allExited, anyFailed := true, false
	for _, c := range ctrs {
		if !c.started {
			return corev1.PodPending
		}
		if !c.exited || c.waiting != "" {
			allExited = false
		}
		if c.exited && c.exitCode != 0 {
			anyFailed = true
		}
	}
	switch {
	case !allExited || policy == corev1.RestartPolicyAlways:
		return corev1.PodRunning
	case policy == corev1.RestartPolicyOnFailure && anyFailed:
		return corev1.PodRunning
	case anyFailed:
		return corev1.PodFailed
	}
	return corev1.PodSucceeded
}

// setCondition sets a condition, keeping LastTransitionTime when the status
// does not change.
func setCondition(conds []corev1.PodCondition, t corev1.PodConditionType, ok bool, reason string, now metav1.Time) []corev1.PodCondition {
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
		reason = ""
	}
	for i := range conds {
		if conds[i].Type == t {
			if conds[i].Status != status {
				conds[i].LastTransitionTime = now
			}
			conds[i].Status, conds[i].Reason = status, reason
			return conds
		}
	}
	return append(conds, corev1.PodCondition{Type: t, Status: status, Reason: reason, LastTransitionTime: now})
}

// podStatus computes the status the simulated kubelet reports. Readiness
// follows the kubelet: Ready needs every container ready and every readiness
// gate's condition True (the gates are set by whoever owns them, such as
// the ms2m controller at handover).
func podStatus(pod *corev1.Pod, ctrs, inits []ctrState, podIP, hostIP string, startTime time.Time, now metav1.Time) corev1.PodStatus {
	st := *pod.Status.DeepCopy()
	st.Phase = podPhase(pod.Spec.RestartPolicy, ctrs)
	st.PodIP, st.HostIP = podIP, hostIP
	st.PodIPs = []corev1.PodIP{{IP: podIP}}
	st.HostIPs = []corev1.HostIP{{IP: hostIP}}
	if st.StartTime == nil {
		t := metav1.NewTime(startTime)
		st.StartTime = &t
	}
	st.ContainerStatuses = st.ContainerStatuses[:0]
	allReady := true
	for _, c := range ctrs {
		s := c.status()
		st.ContainerStatuses = append(st.ContainerStatuses, s)
		allReady = allReady && s.Ready
	}
	initsDone := true
	st.InitContainerStatuses = nil
	for _, c := range inits {
		st.InitContainerStatuses = append(st.InitContainerStatuses, c.status())
		initsDone = initsDone && c.exited && c.exitCode == 0
	}
	gatesOK := true
	for _, g := range pod.Spec.ReadinessGates {
		found := false
		for _, c := range pod.Status.Conditions {
			if c.Type == g.ConditionType {
				found = c.Status == corev1.ConditionTrue
			}
		}
		gatesOK = gatesOK && found
	}
	terminal := st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed
	st.Conditions = setCondition(st.Conditions, corev1.PodReadyToStartContainers, !terminal, "", now)
	st.Conditions = setCondition(st.Conditions, corev1.PodInitialized, initsDone, "PodInitializing", now)
	st.Conditions = setCondition(st.Conditions, corev1.ContainersReady, allReady && !terminal, "ContainersNotReady", now)
	reason := "ContainersNotReady"
	if allReady && !gatesOK {
		reason = "ReadinessGatesNotReady"
	}
	st.Conditions = setCondition(st.Conditions, corev1.PodReady, allReady && gatesOK && !terminal, reason, now)
	return st
}
