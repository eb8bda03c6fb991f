// Package scale measures the ms2m manager's footprint at cluster scale:
// its resident memory and CPU, as its own process (bin/ms2m-manager),
// while it watches 1,000 migratable pods on 200 nodes at rest. The API
// server and etcd are real (envtest); nodes and pods are objects only, as
// a kubelet would report them (no processes): the manager's informers see
// exactly what they would see in such a cluster.
//
// Not measured here: a 50-pod evacuation (issue #9 part 3), which needs
// the pods' replay sidecars and node agents running — 1,000 of them do
// not fit on this machine as processes.
package scale

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/ms2m/ms2m/internal/testenv"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	os.Exit(testenv.RunBenchmarksMain(m, &env, testenv.Options{}))
}

const (
	nodes       = 200
	pods        = 1000
	ns          = "default"
	restSeconds = 20
)

// BenchmarkManagerAtRest builds the cluster (once per process), starts a
// manager, waits until it answers /readyz, then samples its resident
// memory and CPU for 20 s. One iteration is one manager's whole
// measurement (ns/op is meaningless); -count repeats it with a fresh
// manager.
func BenchmarkManagerAtRest(b *testing.B) {
	if err := setupOnce(); err != nil {
		b.Fatal(err)
	}
	var f footprint
	for range b.N {
		var err error
		if f, err = measure(b); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(f.rssMiB, "RSS-MiB")
	b.ReportMetric(f.hwmMiB, "HWM-MiB")
	b.ReportMetric(f.cpuPercent, "cpu-%")
}

type footprint struct{ rssMiB, hwmMiB, cpuPercent float64 }

var (
	once     sync.Once
	setupErr error
)

func managerBin() string { return filepath.Join(testenv.RepoRoot(), "bin", "ms2m-manager") }

// setupOnce builds the manager and creates the nodes and pods.
func setupOnce() error {
	once.Do(func() {
		build := exec.Command("go", "build", "-o", managerBin(), "./cmd/ms2m-manager")
		build.Dir = testenv.RepoRoot()
		if out, err := build.CombinedOutput(); err != nil {
			setupErr = fmt.Errorf("building the manager: %v\n%s", err, out)
			return
		}
		setupErr = populate(context.Background())
	})
	return setupErr
}

func measure(b *testing.B) (footprint, error) {
	ctx := context.Background()
	bin := managerBin()
	probe := testenv.FreeAddr(b)
	cmd := exec.Command(bin, "--metrics-bind-address=0", "--health-probe-bind-address="+probe, "--webhook-port=0", "--leader-elect=false")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+env.KubeconfigFile(b))
	logf, err := os.Create(filepath.Join(b.TempDir(), "manager.log"))
	if err != nil {
		return footprint{}, err
	}
	defer func() { _ = logf.Close() }()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return footprint{}, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		resp, err := http.Get("http://" + probe + "/readyz")
		if err != nil {
			return false, nil
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	}); err != nil {
		return footprint{}, fmt.Errorf("the manager did not become ready (log: %s): %w", logf.Name(), err)
	}
	pid := cmd.Process.Pid
	cpu0, err := cpuTicks(pid)
	if err != nil {
		return footprint{}, err
	}
	t0 := time.Now()
	var rss float64
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for range restSeconds {
		<-tick.C // a sampling period, not synchronisation
		r, _, err := memory(pid)
		if err != nil {
			return footprint{}, err
		}
		rss = max(rss, r)
	}
	cpu1, err := cpuTicks(pid)
	if err != nil {
		return footprint{}, err
	}
	_, hwm, err := memory(pid)
	if err != nil {
		return footprint{}, err
	}
	const clkTck = 100 // USER_HZ on Linux
	cpu := float64(cpu1-cpu0) / clkTck / time.Since(t0).Seconds() * 100
	return footprint{rssMiB: rss, hwmMiB: hwm, cpuPercent: cpu}, nil
}

// populate creates the nodes, Ready and restore-capable, and the pods,
// migratable and Running on them, as the webhook and a kubelet would have
// left them.
func populate(ctx context.Context) error {
	c := env.Client
	capacity := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("16"), corev1.ResourceMemory: resource.MustParse("64Gi"), corev1.ResourcePods: resource.MustParse("110")}
	for i := range nodes {
		name := fmt.Sprintf("node-%03d", i)
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			corev1.LabelHostname: name, corev1.LabelOSStable: "linux", corev1.LabelArchStable: "amd64",
			corev1.LabelTopologyZone:  fmt.Sprintf("zone-%d", i%3),
			v1.LabelCheckpointRestore: "true", v1.LabelRuntime: "cri-o", v1.LabelRuntimeVersion: "1.33.0", v1.LabelCRIUVersion: "4.1",
		}}}
		if err := c.Create(ctx, n); err != nil {
			return err
		}
		now := metav1.Now()
		n.Status = corev1.NodeStatus{Capacity: capacity, Allocatable: capacity,
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: now, LastTransitionTime: now}},
			NodeInfo:   corev1.NodeSystemInfo{KernelVersion: "6.8.0", OperatingSystem: "linux", Architecture: "amd64", ContainerRuntimeVersion: "cri-o://1.33.0"}}
		if err := c.Status().Update(ctx, n); err != nil {
			return err
		}
	}
	for i := range pods {
		name := fmt.Sprintf("consumer-%04d", i)
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "consumer"}, Annotations: map[string]string{
				v1.AnnotationMigratable: "true", v1.AnnotationKafkaBrokers: "kafka:9092", v1.AnnotationKafkaTopic: "orders",
				v1.AnnotationKafkaGroup: name, v1.AnnotationAppPort: "8080", v1.AnnotationCheckpointRestore: "enabled",
			}},
			Spec: corev1.PodSpec{
				NodeName: fmt.Sprintf("node-%03d", i%nodes),
				Containers: []corev1.Container{
					{Name: "app", Image: "example.com/consumer:1.0", Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
						corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")}}},
					{Name: v1.SidecarContainerName, Image: "ghcr.io/ms2m/ms2m:v0.1.0", Command: []string{"/ms2m/ms2m-replay"}},
				},
			},
		}
		if err := c.Create(ctx, p); err != nil {
			return err
		}
		now := metav1.Now()
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff), StartTime: &now,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}}}
		for _, ctr := range p.Spec.Containers {
			p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{Name: ctr.Name, Image: ctr.Image, Ready: true,
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}})
		}
		if err := c.Status().Update(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// memory is a process's resident set and its high-water mark, in MiB.
func memory(pid int) (rss, hwm float64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		kib, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			rss = kib / 1024
		case "VmHWM":
			hwm = kib / 1024
		}
	}
	return rss, hwm, sc.Err()
}

// cpuTicks is a process's user and system time, in clock ticks.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	s := string(b)
	f := strings.Fields(s[strings.LastIndex(s, ")")+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return utime + stime, nil
}
