package kubelet

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// NodeSpec describes one simulated node.
type NodeSpec struct {
	Name string
	// Labels are added to the node's standard ones.
	Labels map[string]string
	// CanRestore says whether the node's (simulated) runtime restores
	// checkpoints; nodes that cannot are the ones the extender must avoid.
	CanRestore bool
	// Runtime is the runtime the node simulates, whose archives it writes
	// and whose rules its restores follow: FlavourCRIO (the default) or
	// FlavourContainerd.
	Runtime string
}

// SecondProjectImage is a repository of the project's binaries that no
// node holds until a pod uses it (the sandbox's own components use
// ghcr.io/ms2m/ms2m, which every node holds): a spec's app image whose
// absence from a node's image store it can observe.
const SecondProjectImage = "ghcr.io/ms2m/ms2m-app"

// ProjectImage is the project's image (the Dockerfile's).
const ProjectImage = "ghcr.io/ms2m/ms2m"

// The runtimes a simulated node can behave as, with the release each
// simulates.
const (
	FlavourCRIO       = "cri-o"
	FlavourContainerd = "containerd"
)

var flavourVersions = map[string]string{FlavourCRIO: "1.37.0", FlavourContainerd: "2.2.7"}

// flavour is the runtime the node simulates.
func (s NodeSpec) flavour() string {
	if s.Runtime == FlavourContainerd {
		return FlavourContainerd
	}
	return FlavourCRIO
}

// Runtime says how containers run.
type Runtime struct {
	// BinDir holds the project's binaries.
	BinDir string
	// ProjectImages are image repositories whose containers run as
	// processes (default ghcr.io/ms2m/ms2m).
	ProjectImages []string
	// Registry is the host:port of the sandbox registry; checkpoint images
	// are pulled from it.
	Registry string
}

// Options configure a fleet of simulated nodes.
type Options struct {
	Client kubernetes.Interface
	// Config is the API server's address and CA, written into the pods'
	// kubeconfigs.
	Config *rest.Config
	// Dir holds per-node state: pod directories, logs, checkpoints.
	Dir string
	// SharedDir is the sandbox's own directory, which the pods share with
	// the host: paths inside it are never redirected to a volume.
	SharedDir string
	Nodes     []NodeSpec
	Runtime   Runtime
	// ServingCert signs the kubelet API certificates; see NewCA.
	CA  *CA
	Log logr.Logger
	// PodCIDR and NodeCIDR are the loopback ranges pods and nodes get
	// addresses from (defaults 127.1.0.0/16 and 127.2.0.0/16); sandboxes
	// running side by side need distinct ones.
	PodCIDR, NodeCIDR string
	// Env is added to every process (the sandbox marks its processes so
	// `sandbox down` can find strays).
	Env []string
}

// Fleet runs every simulated node of the sandbox with one pod informer and
// one work queue, so thousands of nodes cost goroutines, not processes.
type Fleet struct {
	opts    Options
	log     logr.Logger
	nodes   map[string]*node
	pods    corelisters.PodLister
	queue   workqueue.TypedRateLimitingInterface[string]
	podIPs  *ipPool
	nodeIPs *ipPool

	mu      sync.Mutex
	running map[string]*podRuntime // by namespace/name
	// sockDir holds the simulated-CRIU hook sockets: short paths (unix
	// sockets allow ~100 bytes), readable only by the runtime's user.
	sockDir string

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start registers the nodes, starts their heartbeats and kubelet APIs, and
// begins running the pods bound to them.
func Start(ctx context.Context, opts Options) (*Fleet, error) {
	if len(opts.Runtime.ProjectImages) == 0 {
		opts.Runtime.ProjectImages = []string{ProjectImage, SecondProjectImage}
	}
	ctx, cancel := context.WithCancel(ctx)
	f := &Fleet{
		opts: opts, log: opts.Log, nodes: map[string]*node{}, running: map[string]*podRuntime{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 10*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "sandbox-kubelet"}),
		podIPs:  newIPPool(cmp.Or(opts.PodCIDR, "127.1.0.0/16")),
		nodeIPs: newIPPool(cmp.Or(opts.NodeCIDR, "127.2.0.0/16")),
		cancel:  cancel,
	}
	var err error
	if f.sockDir, err = os.MkdirTemp("", "ms2m-sim-"); err != nil {
		cancel()
		return nil, err
	}
	for _, spec := range opts.Nodes {
		n, err := f.newNode(ctx, spec)
		if err != nil {
			f.Stop()
			return nil, err
		}
		f.nodes[spec.Name] = n
	}

	factory := informers.NewSharedInformerFactory(opts.Client, 0)
	inf := factory.Core().V1().Pods()
	f.pods = inf.Lister()
	_, _ = inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    f.enqueue,
		UpdateFunc: func(_, o any) { f.enqueue(o) },
		DeleteFunc: f.enqueue,
	})
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		f.Stop()
		return nil, errors.New("simulated kubelet: pod informer did not sync")
	}
	for range 8 {
		f.wg.Go(func() { wait.UntilWithContext(ctx, f.work, time.Second) })
	}
	f.wg.Go(func() { f.heartbeat(ctx) })
	return f, nil
}

// Stop stops every node: heartbeats end (the nodes go NotReady in the
// cluster after the grace period) and every pod process is stopped.
func (f *Fleet) Stop() {
	f.cancel()
	f.queue.ShutDown()
	f.mu.Lock()
	prs := make([]*podRuntime, 0, len(f.running))
	for _, pr := range f.running {
		prs = append(prs, pr)
	}
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, pr := range prs {
		wg.Go(func() { pr.kill(5 * time.Second) })
	}
	wg.Wait()
	for _, n := range f.nodes {
		n.stop()
	}
	f.wg.Wait()
	_ = os.RemoveAll(f.sockDir)
}

// Nodes returns the names of the simulated nodes.
func (f *Fleet) Nodes() []string {
	out := make([]string, 0, len(f.nodes))
	for _, spec := range f.opts.Nodes {
		out = append(out, spec.Name)
	}
	return out
}

// Holds reports whether a node's image store holds image (a container on
// the node was started from it), and false for an unknown node.
func (f *Fleet) Holds(nodeName, image string) bool {
	n, ok := f.nodes[nodeName]
	return ok && n.holds(image)
}

// KubeletAddress returns the host:port of a node's kubelet API.
func (f *Fleet) KubeletAddress(nodeName string) (string, bool) {
	n, ok := f.nodes[nodeName]
	if !ok {
		return "", false
	}
	return n.apiAddr, true
}

// PodDir is where a pod's processes run and log (<container>.log).
func (f *Fleet) PodDir(nodeName, namespace, pod string) string {
	return filepath.Join(f.opts.Dir, nodeName, "pods", namespace+"_"+pod)
}

func (f *Fleet) enqueue(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	if _, mine := f.nodes[pod.Spec.NodeName]; !mine {
		return
	}
	f.queue.Add(pod.Namespace + "/" + pod.Name)
}

func (f *Fleet) work(ctx context.Context) {
	for {
		key, shutdown := f.queue.Get()
		if shutdown {
			return
		}
		err := f.sync(ctx, key)
		switch {
		case err == nil:
			f.queue.Forget(key)
		case apierrors.IsConflict(err):
			f.queue.AddRateLimited(key)
		default:
			if ctx.Err() == nil {
				f.log.Error(err, "syncing pod", "pod", key)
			}
			f.queue.AddRateLimited(key)
		}
		f.queue.Done(key)
	}
}

// tlsConfig serves a node's kubelet API with a certificate for its address.
func (f *Fleet) tlsConfig(ip string) (*tls.Config, error) {
	cert, err := f.opts.CA.ServingCert(ip)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

func mkdir(path string) error {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return fmt.Errorf("simulated kubelet: %w", err)
	}
	return nil
}
