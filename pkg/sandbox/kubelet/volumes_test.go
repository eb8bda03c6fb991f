package kubelet

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// A container sees its volumes at their mountPaths: paths under a
// mountPath in its command line and env lead to the volume's files, the
// deepest mount wins, and nothing else changes.
func TestMountPathsLeadToVolumes(t *testing.T) {
	mounts := newMountTable([]corev1.VolumeMount{
		{Name: "tmp", MountPath: "/tmp"},
		{Name: "cert", MountPath: "/etc/ms2m/tls/"},
		{Name: "conf", MountPath: "/etc/ms2m", SubPath: "sub"},
		{Name: "unknown", MountPath: "/nowhere"},
	}, map[string]string{"tmp": "/sb/pods/p/volumes/tmp", "cert": "/sb/pods/p/volumes/cert", "conf": "/sb/pods/p/volumes/conf"}, "/tmp/sandbox")
	for in, want := range map[string]string{
		"--webhook-cert-dir=/etc/ms2m/tls":          "--webhook-cert-dir=/sb/pods/p/volumes/cert",
		"--cert-file=/etc/ms2m/tls/tls.crt":         "--cert-file=/sb/pods/p/volumes/cert/tls.crt",
		"/etc/ms2m/config.yaml":                     "/sb/pods/p/volumes/conf/sub/config.yaml",
		"--a=/tmp/x,/etc/ms2m/tls/ca.crt":           "--a=/sb/pods/p/volumes/tmp/x,/sb/pods/p/volumes/cert/ca.crt",
		"--kubelet-ca-file=/tmp/sandbox/pki/ca.crt": "--kubelet-ca-file=/tmp/sandbox/pki/ca.crt",
		"/etc/ms2m-other/file":                      "/etc/ms2m-other/file",
		"/nowhere/file":                             "/nowhere/file",
		"http://127.0.0.1:8080/etc/ms2m":            "http://127.0.0.1:8080/etc/ms2m",
		"relative/etc/ms2m/tls":                     "relative/etc/ms2m/tls",
		"$(POD_IP):8081":                            "$(POD_IP):8081",
	} {
		if got := mounts.rewrite(in); got != want {
			t.Errorf("rewrite(%q) = %q, want %q", in, got, want)
		}
	}
	if got := mounts.rewriteEnv([]string{"DOCKER_CONFIG=/etc/ms2m/tls", "A=b=c"}); got[0] != "DOCKER_CONFIG=/sb/pods/p/volumes/cert" || got[1] != "A=b=c" {
		t.Errorf("rewriteEnv = %q", got)
	}
}
