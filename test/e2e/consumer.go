package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/ms2m/ms2m/examples/statefulapp"
	"github.com/ms2m/ms2m/pkg/replay"
)

// ConsumerContainer is the example stateful consumer, as a container.
func ConsumerContainer() corev1.Container {
	return corev1.Container{
		Name: "app", Image: Image, Command: []string{"/ms2m/example-consumer"},
		Env:   []corev1.EnvVar{{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}},
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
			PeriodSeconds: 1,
		},
	}
}

// ConsumerURL is the consumer's base URL in pod p.
func ConsumerURL(p *corev1.Pod) string {
	return "http://" + net.JoinHostPort(p.Status.PodIP, "8080")
}

// Deliver posts messages to a consumer as its replay sidecar would, so a
// spec can give it state without a broker.
func Deliver(ctx context.Context, base string, partition int, fromOffset int64, seqs ...int64) error {
	for i, seq := range seqs {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/messages", bytes.NewBufferString(strconv.FormatInt(seq, 10)))
		if err != nil {
			return err
		}
		req.Header.Set(replay.HeaderPartition, strconv.Itoa(partition))
		req.Header.Set(replay.HeaderOffset, strconv.FormatInt(fromOffset+int64(i), 10))
		replay.SetKey(req.Header, fmt.Appendf(nil, "k%03d", seq%7))
		req.Close = true // the consumer may be checkpointed next: CRIU refuses a connection
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("consumer answered %s", resp.Status)
		}
	}
	return nil
}

// podTemplate runs the plain example consumer (not opted in to ms2m)
// with label app.
func podTemplate(app string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{ConsumerContainer()}, TerminationGracePeriodSeconds: ptr.To(int64(5))},
	}
}

// assertServing waits for n Ready pods and checks that each answers on its
// own pod IP, on a node of the cluster.
func assertServing(ctx context.Context, t *testing.T, c *Cluster, ns, selector string, n int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	c.Eventually(t, selector+" Ready", func(ctx context.Context) error {
		var err error
		pods, err = c.PodsReady(ctx, ns, selector, n)
		return err
	})
	ips := map[string]bool{}
	for _, p := range pods {
		if p.Spec.NodeName == "" || ips[p.Status.PodIP] {
			t.Fatalf("pod %s: node %q, IP %q (must be bound and unique)", p.Name, p.Spec.NodeName, p.Status.PodIP)
		}
		ips[p.Status.PodIP] = true
		if _, err := statefulapp.FetchSummary(ctx, ConsumerURL(&p)); err != nil {
			t.Fatalf("pod %s does not serve on its IP: %v", p.Name, err)
		}
	}
	return pods
}
