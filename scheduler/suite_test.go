package scheduler

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/internal/expect"
	"github.com/ms2m/ms2m/internal/testenv"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// The real kube-scheduler (from the control-plane cache) schedules pods
// against a real kube-apiserver, calling this package's extender over HTTP.
// The extender reads nodes from informers on that API server, as in the
// manager. Nothing here is faked but the kubelets: nodes are Node objects
// with a Ready condition.

var (
	env *testenv.Env
	// ext is the extender every scheduler of this package calls.
	ext *testExtenderServer
)

func TestMain(m *testing.M) {
	os.Exit(testenv.RunMain(m, &env, testenv.Options{}, startExtender))
}

// testExtenderServer serves the extender and records which pods the
// scheduler asked about.
type testExtenderServer struct {
	*httptest.Server
	cache *Cache

	mu    sync.Mutex
	asked map[string]int // namespace/name → requests
}

func (s *testExtenderServer) requestsFor(pod *corev1.Pod) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asked[pod.Namespace+"/"+pod.Name]
}

func startExtender(e *testenv.Env) (stop func(), err error) {
	ctx, cancel := context.WithCancel(context.Background())
	informers, err := crcache.New(e.Config, crcache.Options{Scheme: e.Scheme})
	if err != nil {
		cancel()
		return nil, err
	}
	go func() { _ = informers.Start(ctx) }()
	c := NewCache(informers)
	go func() { _ = c.Start(ctx) }()
	select {
	case <-c.Synced():
	case <-time.After(expect.Timeout):
		cancel()
		return nil, errors.New("the extender's cache did not sync")
	}
	handler := NewExtender(c, logr.Discard())
	ext = &testExtenderServer{cache: c, asked: map[string]int{}}
	ext.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Peek at the pod without consuming the body for the handler.
		body, err := readBody(r.Body, r.ContentLength, DefaultMaxRequestBytes)
		if err == nil {
			if args, err := decodeArgs(body); err == nil && args.Pod != nil {
				ext.mu.Lock()
				ext.asked[args.Pod.Namespace+"/"+args.Pod.Name]++
				ext.mu.Unlock()
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		handler.ServeHTTP(w, r)
	}))
	return func() { ext.Close(); cancel() }, nil
}

// startScheduler runs kube-scheduler with one profile, schedulerName, and
// the extender, until the test ends.
func startScheduler(t *testing.T, schedulerName string, nodeCacheCapable bool) {
	t.Helper()
	dir := t.TempDir()
	config := fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: %s
leaderElection:
  leaderElect: false
profiles:
- schedulerName: %s
extenders:
- urlPrefix: %s
  filterVerb: filter
  prioritizeVerb: prioritize
  weight: 1
  nodeCacheCapable: %t
  httpTimeout: 10s
  managedResources:
  - name: %s
    ignoredByScheduler: true
`, env.KubeconfigFile(t), schedulerName, ext.URL, nodeCacheCapable, v1.ResourceCheckpointRestore)
	configPath := filepath.Join(dir, "scheduler.yaml")
	if err := os.WriteFile(configPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "kube-scheduler.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, filepath.Join(testenv.AssetsDir(t), "kube-scheduler"),
		"--config="+configPath, "--leader-elect=false", "--secure-port=0", "--v=2")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group, killed with the test binary if that dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting kube-scheduler: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		_ = logFile.Close()
		if t.Failed() {
			if out, err := os.ReadFile(logPath); err == nil {
				lines := strings.Split(string(out), "\n")
				t.Logf("kube-scheduler log (last 40 lines):\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
			}
		}
	})
}

// createNode creates a Ready node in group, as a kubelet would report it.
func createNode(t *testing.T, group string, n *corev1.Node) {
	t.Helper()
	ctx := context.Background()
	n.Labels["ms2m.io/test-group"] = group
	status := n.Status
	if err := env.Client.Create(ctx, n); err != nil {
		t.Fatal(err)
	}
	// The API server's admission taints new nodes not-ready; the node
	// lifecycle controller, which would lift it, does not run here.
	n.Spec.Taints = nil
	if err := env.Client.Update(ctx, n); err != nil {
		t.Fatal(err)
	}
	status.Conditions[0].LastHeartbeatTime = metav1.Now()
	n.Status = status
	if err := env.Client.Status().Update(ctx, n); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), n) })
	expect.Eventually(t, "extender sees node "+n.Name, func() error {
		got, ok := ext.cache.Node(n.Name)
		if !ok || !got.Ready || len(got.Node.Spec.Taints) > 0 {
			return errors.New("not yet Ready and untainted in the extender's cache")
		}
		return nil
	})
}

// schedulerPod is a pod for schedulerName, confined to group's nodes;
// migratable pods carry the sidecar's ms2m.io/checkpoint-restore request.
func schedulerPod(name, schedulerName, group string, migratable bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			SchedulerName: schedulerName,
			NodeSelector:  map[string]string{"ms2m.io/test-group": group},
			Containers: []corev1.Container{{Name: "app", Image: "example/consumer:1", Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			}}},
		},
	}
	if migratable {
		marker := corev1.ResourceList{v1.ResourceCheckpointRestore: resource.MustParse("1")}
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: v1.SidecarContainerName, Image: "ghcr.io/ms2m/ms2m:v0.1.0",
			Resources: corev1.ResourceRequirements{Requests: marker, Limits: marker}})
	}
	return p
}

func createPod(t *testing.T, p *corev1.Pod) {
	t.Helper()
	if err := env.Client.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), p, client.GracePeriodSeconds(0)) })
}

func boundNode(t *testing.T, p *corev1.Pod) string {
	t.Helper()
	var node string
	expect.Eventually(t, "pod "+p.Name+" bound", func() error {
		got := &corev1.Pod{}
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(p), got); err != nil {
			return err
		}
		if node = got.Spec.NodeName; node == "" {
			return errors.New("not bound yet")
		}
		return nil
	})
	return node
}

func TestRealSchedulerWithNodeNames(t *testing.T) {
	testRealScheduler(t, "ms2m-node-names", true)
}

func TestRealSchedulerWithNodeObjects(t *testing.T) {
	testRealScheduler(t, "ms2m-node-objects", false)
}

func testRealScheduler(t *testing.T, schedulerName string, nodeCacheCapable bool) {
	startScheduler(t, schedulerName, nodeCacheCapable)
	prefix := schedulerName + "-"

	t.Run("migratable pods land only on restore-capable nodes", func(t *testing.T) {
		group := prefix + "mixed"
		// The incapable node is far bigger: the scheduler's own scoring
		// would prefer it.
		createNode(t, group, testNode(prefix+"capable", withAllocatable("2", "4Gi")))
		createNode(t, group, testNode(prefix+"incapable", withAllocatable("64", "256Gi"), withoutLabel(v1.LabelCheckpointRestore)))
		for i := range 3 {
			p := schedulerPod(fmt.Sprintf("%smigratable-%d", prefix, i), schedulerName, group, true)
			createPod(t, p)
			if node := boundNode(t, p); node != prefix+"capable" {
				t.Errorf("migratable pod %s bound to %s; want %scapable", p.Name, node, prefix)
			}
			if ext.requestsFor(p) == 0 {
				t.Errorf("the scheduler placed %s without asking the extender", p.Name)
			}
		}
	})

	t.Run("without a capable node the pod stays pending with the extender's reason", func(t *testing.T) {
		group := prefix + "none"
		createNode(t, group, testNode(prefix+"old-runtime-a", withLabel(v1.LabelCheckpointRestore, "false")))
		createNode(t, group, testNode(prefix+"old-runtime-b", withoutLabel(v1.LabelCRIUVersion)))
		p := schedulerPod(prefix+"stuck", schedulerName, group, true)
		createPod(t, p)
		var msg string
		expect.Eventually(t, "FailedScheduling event", func() error {
			events := &corev1.EventList{}
			if err := env.Client.List(context.Background(), events, client.InNamespace(p.Namespace)); err != nil {
				return err
			}
			for _, ev := range events.Items {
				if ev.InvolvedObject.Name == p.Name && ev.Reason == "FailedScheduling" {
					msg = ev.Message
					return nil
				}
			}
			return errors.New("no FailedScheduling event yet")
		})
		if !strings.Contains(msg, "ms2m "+ReasonCheckpointRestoreUnsupported) || !strings.Contains(msg, "0/") {
			t.Errorf("FailedScheduling says %q; want the extender's %s", msg, ReasonCheckpointRestoreUnsupported)
		}
		got := &corev1.Pod{}
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(p), got); err != nil {
			t.Fatal(err)
		}
		if got.Spec.NodeName != "" || got.Status.Phase != corev1.PodPending {
			t.Errorf("pod is bound to %q (phase %s); want it Pending, unbound", got.Spec.NodeName, got.Status.Phase)
		}
		t.Logf("event: %s", msg)
	})

	t.Run("pods that do not concern ms2m are never sent to the extender", func(t *testing.T) {
		group := prefix + "plain"
		createNode(t, group, testNode(prefix+"plain-incapable", withoutLabel(v1.LabelCheckpointRestore)))
		p := schedulerPod(prefix+"web", schedulerName, group, false)
		createPod(t, p)
		if node := boundNode(t, p); node != prefix+"plain-incapable" {
			t.Errorf("bound to %s", node)
		}
		if n := ext.requestsFor(p); n != 0 {
			t.Errorf("the scheduler sent a pod without the ms2m resource to the extender %d times", n)
		}
	})
}
