package kubelet

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// A runAsNonRoot container without runAsUser runs only from an image whose
// config names a numeric non-root user, as the kubelet verifies it.
func TestRunAsNonRootIsVerifiedAgainstTheImageUser(t *testing.T) {
	nonRoot := &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true)}
	for _, tc := range []struct {
		name      string
		psc       *corev1.PodSecurityContext
		csc       *corev1.SecurityContext
		imageUser string
		known     bool
		uid       uint32
		err       string
	}{
		{name: "image without a user (a checkpoint image with an empty config)", psc: nonRoot, known: true, err: "image will run as root"},
		{name: "image user root", psc: nonRoot, imageUser: "0:0", known: true, err: "image will run as root"},
		{name: "image user by name", psc: nonRoot, imageUser: "app", known: true, err: "non-numeric user (app)"},
		{name: "image user numeric", psc: nonRoot, imageUser: "65532:65532", known: true, uid: 65532},
		{name: "runAsUser decides", psc: nonRoot, csc: &corev1.SecurityContext{RunAsUser: ptr.To(int64(1000))}, known: true, uid: 1000},
		{name: "runAsUser 0 with runAsNonRoot", psc: nonRoot, csc: &corev1.SecurityContext{RunAsUser: ptr.To(int64(0))}, known: true, err: "breaks non-root policy"},
		{name: "no policy", imageUser: "", known: true, uid: 0},
		{name: "an image the sandbox does not read", psc: nonRoot, known: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr := &podRuntime{key: "shop/orders-0"}
			c := &container{spec: corev1.Container{Name: "app", SecurityContext: tc.csc}}
			pod := &corev1.Pod{Spec: corev1.PodSpec{SecurityContext: tc.psc}}
			err := pr.runAs(pod, c, tc.imageUser, tc.known)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || c.uid != tc.uid {
				t.Fatalf("err %v, uid %d; want uid %d", err, c.uid, tc.uid)
			}
		})
	}
}
