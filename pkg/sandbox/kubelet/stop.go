package kubelet

import (
	"context"
	"os"
	"slices"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/ms2m/ms2m/pkg/simcriu"
)

// terminate stops the processes within the grace period (SIGTERM, then
// SIGKILL), then deletes the pod for good, as the kubelet does once
// containers are gone.
func (pr *podRuntime) terminate(ctx context.Context, pod *corev1.Pod, grace time.Duration) {
	pr.kill(grace)
	pr.mu.Lock()
	for _, c := range pr.ctrs {
		if c.st.running {
			c.st.running, c.st.exited, c.st.finishedAt = false, true, time.Now()
		}
	}
	pr.mu.Unlock()
	if fresh, err := pr.f.pods.Pods(pod.Namespace).Get(pod.Name); err == nil && fresh.UID == pod.UID {
		_ = pr.updateStatus(ctx, fresh)
	}
	err := pr.f.opts.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To(int64(0)), Preconditions: &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && ctx.Err() == nil {
		pr.f.log.Error(err, "deleting terminated pod", "pod", pr.key)
		pr.f.queue.AddRateLimited(pr.key)
	}
}

// kill sends SIGTERM to every process and SIGKILL to what is left after
// grace; it returns when all have exited.
func (pr *podRuntime) kill(grace time.Duration) {
	pr.mu.Lock()
	pr.phase = "terminating"
	var waits []chan struct{}
	for _, c := range append(append([]*container{}, pr.inits...), pr.ctrs...) {
		if c.probeCancel != nil {
			c.probeCancel()
		}
		if c.done != nil {
			c.signal(syscall.SIGTERM)
			waits = append(waits, c.done)
		}
	}
	cs := append(append([]*container{}, pr.inits...), pr.ctrs...)
	pr.mu.Unlock()
	deadline := time.After(grace)
	for _, w := range waits {
		select {
		case <-w:
		case <-deadline:
			pr.mu.Lock()
			for _, c := range cs {
				c.signal(syscall.SIGKILL)
			}
			pr.mu.Unlock()
			<-w
		}
	}
}

// release stops the pod's processes and returns its address.
func (pr *podRuntime) release(grace time.Duration) {
	pr.kill(grace)
	pr.mu.Lock()
	ip := pr.ip
	var cgroups []simcriu.Cgroup
	for _, c := range append(slices.Clone(pr.inits), pr.ctrs...) {
		if c.cgroup != "" {
			cgroups = append(cgroups, c.cgroup)
		}
	}
	pr.mu.Unlock()
	if ip != "" {
		pr.f.podIPs.put(ip)
	}
	for _, c := range pr.ctrs {
		_ = os.Remove(c.hookSocket)
	}
	for _, g := range cgroups {
		g.Remove()
	}
}
