package kubeproxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/ms2m/ms2m/internal/testenv"
)

// backend serves its name over HTTP on a loopback port.
func backend(t *testing.T, name string) int32 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, name) }),
		ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return int32(l.Addr().(*net.TCPAddr).Port)
}

// A Service's ClusterIP reaches the Ready pods it selects, through their
// named target port, and stops reaching a pod that is no longer Ready and a
// Service that is gone.
func TestClusterIPReachesReadyPods(t *testing.T) {
	env := testenv.Start(t, testenv.Options{ServiceClusterIPRange: "127.251.0.0/24"})
	c := kubernetes.NewForConfigOrDie(env.Config)
	ctx := context.Background()
	ports := map[string]int32{"a": backend(t, "a"), "b": backend(t, "b")}
	setReady := func(pod *corev1.Pod, ready bool) *corev1.Pod {
		t.Helper()
		st := corev1.ConditionFalse
		if ready {
			st = corev1.ConditionTrue
		}
		pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1",
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}}
		pod, err := c.CoreV1().Pods("default").UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return pod
	}
	pods := map[string]*corev1.Pod{}
	for name, port := range ports {
		pod, err := c.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: port}}}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pods[name] = setReady(pod, true)
	}
	svc, err := c.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "web", Port: 8080, TargetPort: intstr.FromString("http")}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := Start(ctx, c, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)

	url := "http://" + net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(8080))
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func() (string, error) {
		resp, err := hc.Get(url) //nolint:noctx // loopback test server
		if err != nil {
			return "", err
		}
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	// answered polls until n requests in a row are answered by exactly the
	// pods in want.
	answered := func(what string, n int, want ...string) {
		t.Helper()
		var last string
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			seen := map[string]bool{}
			for range n {
				got, err := get()
				if err != nil {
					last = err.Error()
					return false, nil
				}
				seen[got] = true
			}
			last = fmt.Sprint(seen)
			if len(seen) != len(want) {
				return false, nil
			}
			for _, w := range want {
				if !seen[w] {
					return false, nil
				}
			}
			return true, nil
		})
		if err != nil {
			t.Fatalf("%s: the ClusterIP %s was not answered by exactly %v (last: %s)", what, url, want, last)
		}
	}
	answered("both pods Ready", 10, "a", "b")

	setReady(pods["b"], false)
	answered("pod b not Ready", 10, "a")

	if err := c.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		_, err := get()
		return err != nil, nil
	}); err != nil {
		t.Fatalf("the ClusterIP %s still answers after its Service was deleted", url)
	}
}
