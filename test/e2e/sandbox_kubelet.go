package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"
)

// KubeletFaultsSpec: a container whose binary crashes is restarted with back-off
// and says where its log is; a project image naming a binary that does not
// exist fails with a message saying how to fix it. Sandbox only: on a real
// cluster these are the kubelet's own behaviours.
func KubeletFaultsSpec(c *Cluster) features.Feature {
	var ns string
	waiting := func(ctx context.Context, name string) (*corev1.ContainerStatus, error) {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		if len(p.Status.ContainerStatuses) == 0 {
			return nil, fmt.Errorf("no container status yet")
		}
		return &p.Status.ContainerStatuses[0], nil
	}
	create := func(ctx context.Context, t *testing.T, name string, command ...string) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: Image, Command: command}}}}
		if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return features.New("faults in pods are reported as a kubelet reports them").
		Setup(func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			c.sandboxOnly(t, "checks the simulated kubelet")
			ns = c.Namespace(t, "faults")
			return ctx
		}).
		Assess("a crashing binary is restarted with back-off, pointing at its log", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			create(ctx, t, "crasher", "/ms2m/example-producer") // exits 1: --brokers is required
			c.Eventually(t, "CrashLoopBackOff after two restarts", func(ctx context.Context) error {
				s, err := waiting(ctx, "crasher")
				if err != nil {
					return err
				}
				if s.RestartCount < 2 || s.LastTerminationState.Terminated == nil || s.LastTerminationState.Terminated.ExitCode != 1 {
					return fmt.Errorf("restarts %d, last state %+v", s.RestartCount, s.LastTerminationState)
				}
				return nil
			})
			s, err := waiting(ctx, "crasher")
			if err != nil {
				t.Fatal(err)
			}
			if s.State.Waiting != nil && !strings.Contains(s.State.Waiting.Message, "c.log") {
				t.Errorf("back-off message %q does not say where the log is", s.State.Waiting.Message)
			}
			return ctx
		}).
		Assess("a missing binary fails with how to fix it", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			create(ctx, t, "missing", "/ms2m/no-such-binary")
			c.Eventually(t, "RunContainerError naming the fix", func(ctx context.Context) error {
				s, err := waiting(ctx, "missing")
				if err != nil {
					return err
				}
				if s.State.Waiting == nil || s.State.Waiting.Reason != "RunContainerError" || !strings.Contains(s.State.Waiting.Message, "make build") {
					return fmt.Errorf("state %+v", s.State)
				}
				return nil
			})
			return ctx
		}).Feature()
}
