package charts_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/ms2m/ms2m/pkg/agent"
)

func TestAgentDaemonSet(t *testing.T) {
	objs := render(t)
	spec := podSpecOf(t, objs, "DaemonSet", release+"-agent")
	ctr := spec.Containers[0]
	f := flags(t, ctr)
	expectLockedDown(t, ctr)
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Errorf("agent shares host namespaces: network %v, PID %v, IPC %v", spec.HostNetwork, spec.HostPID, spec.HostIPC)
	}
	if spec.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Errorf("nodeSelector %v", spec.NodeSelector)
	}
	var nodeName bool
	for _, e := range ctr.Env {
		nodeName = nodeName || e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
	}
	if !nodeName {
		t.Error("NODE_NAME is not the pod's spec.nodeName")
	}
	if f["kubelet-ca-file"] == "" && f["kubelet-insecure-tls"] != "true" {
		t.Error("the agent cannot verify its kubelet: neither --kubelet-ca-file nor --kubelet-insecure-tls")
	}
	// The kubelet reports archive paths on the node: the checkpoint
	// directory must be at the same path. Every other host path is
	// read-only, at its own path under --host-root.
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	var checkpoints bool
	var underHostRoot []string
	for _, m := range ctr.VolumeMounts {
		path, ok := hostPaths[m.Name]
		if !ok {
			continue
		}
		switch {
		case path == "/var/lib/kubelet/checkpoints":
			checkpoints = m.MountPath == path
		case !m.ReadOnly:
			t.Errorf("host path %s is mounted writable", path)
		case m.MountPath != f["host-root"]+path:
			t.Errorf("host path %s is mounted at %s, not at its own path under --host-root=%s", path, m.MountPath, f["host-root"])
		default:
			underHostRoot = append(underHostRoot, path)
		}
	}
	if !checkpoints {
		t.Error("the kubelet's checkpoint directory is not mounted at its own path")
	}
	// The agent finds what it probes (runtime configuration, criu, dpkg's
	// database) under --host-root, and the chart mounts nothing else of the
	// host there.
	for _, p := range agent.HostPaths() {
		if !slices.ContainsFunc(underHostRoot, func(m string) bool { return p == m || strings.HasPrefix(p, m+"/") }) {
			t.Errorf("the agent reads host path %s, which the chart does not mount under --host-root (mounted: %v)", p, underHostRoot)
		}
	}
	for _, m := range underHostRoot {
		if !slices.Contains(agent.HostPaths(), m) {
			t.Errorf("the chart mounts host path %s, which the agent does not read (agent.HostPaths: %v)", m, agent.HostPaths())
		}
	}
	if got := containerPort(t, ctr, ctr.ReadinessProbe.HTTPGet.Port); got != portOf(t, f["health-probe-bind-address"]) {
		t.Errorf("readiness probe on %d; health on %s", got, f["health-probe-bind-address"])
	}
}
