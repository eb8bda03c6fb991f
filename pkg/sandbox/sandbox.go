// Package sandbox runs a whole Kubernetes cluster on one machine without a
// container engine: the real etcd, kube-apiserver, kube-controller-manager
// and kube-scheduler (from the cache hack/build-control-plane.sh fills), a
// Kafka-protocol broker (kfake), an OCI registry (go-containerregistry's,
// blobs on disk) and simulated nodes (package kubelet) whose checkpoint and
// restore are a SIMULATED CRIU. It is how a newcomer sees ms2m work, and
// what the e2e tests and benchmarks run on.
//
// All state lives under Options.Dir; every process the sandbox starts
// carries MS2M_SANDBOX_DIR=<Dir> in its environment, so Reap can find and
// stop strays after a crash.
package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/twmb/franz-go/pkg/kfake"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/ms2m/ms2m/pkg/manager"
	"github.com/ms2m/ms2m/pkg/sandbox/broker"
	"github.com/ms2m/ms2m/pkg/sandbox/kubelet"
	"github.com/ms2m/ms2m/pkg/sandbox/kubeproxy"
)

// EnvDir marks every process of a sandbox with its state directory.
const EnvDir = "MS2M_SANDBOX_DIR"

// Options configure a sandbox.
type Options struct {
	// Dir holds all state: etcd data, certificates, kubeconfigs, logs, the
	// registry's blobs, node and pod directories.
	Dir string
	// ControlPlaneDir holds etcd, kube-apiserver, kube-controller-manager
	// and kube-scheduler (hack/build-control-plane.sh prints it).
	ControlPlaneDir string
	// BinDir holds the project's binaries that pods of ghcr.io/ms2m/ms2m run.
	BinDir string
	// Nodes is the number of simulated nodes (default 3).
	Nodes int
	// NodesWithoutRestore of them (the last ones) cannot restore
	// checkpoints, as nodes whose runtime has restore disabled.
	NodesWithoutRestore int
	// The nodes that restore simulate CRI-O, or, from four of them on, the
	// first half CRI-O and the second half containerd (nodeRuntimes): a
	// checkpoint restores only in the runtime that wrote it, so each
	// runtime needs two nodes for its pods to have somewhere to go.
	// Partitions of topics the broker creates on first use (default 2).
	Partitions int
	// KafkaInitialRebalanceDelay is the broker's
	// group.initial.rebalance.delay.ms: how long the first rebalance of an
	// empty consumer group waits (0: Apache Kafka's default, 3 s; negative:
	// none, as kfake alone does). See broker.DelayJoinsIntoEmptyGroups.
	KafkaInitialRebalanceDelay time.Duration
	// CRDDirs are installed at start (the ms2m CRDs).
	CRDDirs []string
	// SchedulerExtenders are added to the scheduler's configuration, as
	// YAML list items (see scheduler/ for ms2m's).
	SchedulerExtenders []map[string]any
	// Manager runs the ms2m manager inside the sandbox (the embedded
	// default), with its admission webhooks registered with the API server
	// from WebhookManifests (config/webhook). Nil runs none.
	Manager          *manager.Options
	WebhookManifests string
	// RBACDir holds the generated ClusterRoles (config/rbac/{manager,agent})
	// the manager and the agent run under.
	RBACDir string
	// Log receives progress and the simulated kubelets' logs.
	Log logr.Logger
}

// Sandbox is a running sandbox.
type Sandbox struct {
	opts Options
	// Kubeconfig is a cluster-admin kubeconfig for kubectl.
	Kubeconfig string
	Config     *rest.Config
	Client     kubernetes.Interface
	// Broker is the Kafka bootstrap address.
	Broker string
	// Registry is the registry's host:port (plain HTTP on loopback).
	Registry string
	// KubeletCA verifies the simulated kubelets' API certificates.
	KubeletCA []byte
	Fleet     *kubelet.Fleet

	cp      *controlPlane
	slot    *os.File
	stopMgr context.CancelFunc
	mgrCfg  *rest.Config
	mgrOpts manager.Options
	mgrDone chan error
	// mgrKill SIGKILLs the manager when it runs as a process (mgrProcess).
	mgrKill    func() error
	mgrProcess bool
	kafka      *kfake.Cluster
	registry   *http.Server
	// registryPassword opens the registry's private repositories.
	registryPassword string
	proxy            *kubeproxy.Proxy
}

// State is what `sandbox status` and other tools read from Dir/sandbox.json.
type State struct {
	PID        int         `json:"pid"`
	Kubeconfig string      `json:"kubeconfig"`
	APIServer  string      `json:"apiServer"`
	Broker     string      `json:"broker"`
	Registry   string      `json:"registry"`
	KubeletCA  string      `json:"kubeletCA"`
	Nodes      []NodeState `json:"nodes"`
	StartedAt  time.Time   `json:"startedAt"`
}

// NodeState locates one simulated node.
type NodeState struct {
	Name    string `json:"name"`
	Kubelet string `json:"kubelet"`
	PodDir  string `json:"podDir"`
}

// StateFile is where a running sandbox describes itself.
func StateFile(dir string) string { return filepath.Join(dir, "sandbox.json") }

// ReadState reads a sandbox's state file.
func ReadState(dir string) (State, error) {
	var s State
	b, err := os.ReadFile(StateFile(dir))
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(b, &s)
}

func (o *Options) defaults() error {
	if o.Dir == "" {
		return errors.New("sandbox: Dir is required")
	}
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Nodes < 1 || o.NodesWithoutRestore < 0 || o.NodesWithoutRestore > o.Nodes {
		return fmt.Errorf("sandbox: %d nodes with %d unable to restore makes no sense", o.Nodes, o.NodesWithoutRestore)
	}
	if o.Partitions == 0 {
		o.Partitions = 2
	}
	if o.KafkaInitialRebalanceDelay == 0 {
		o.KafkaInitialRebalanceDelay = broker.DefaultInitialRebalanceDelay
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		if _, err := os.Stat(filepath.Join(o.ControlPlaneDir, b)); err != nil {
			return fmt.Errorf("sandbox: no %s in %q: build the control plane with `make control-plane` "+
				"(hack/build-control-plane.sh; ~7-17 min cold) and pass its directory", b, o.ControlPlaneDir)
		}
	}
	abs, err := filepath.Abs(o.Dir)
	if err != nil {
		return err
	}
	o.Dir = abs
	return os.MkdirAll(filepath.Join(o.Dir, "logs"), 0o700)
}

// Start brings the sandbox up: control plane, broker, registry, nodes. On
// error everything started so far is stopped again.
func Start(ctx context.Context, opts Options) (s *Sandbox, err error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	if err := os.Setenv(EnvDir, opts.Dir); err != nil { // inherited by etcd and the apiserver
		return nil, err
	}
	s = &Sandbox{opts: opts}
	defer func() {
		if err != nil {
			s.Stop()
			s = nil
		}
	}()
	logf := func(msg string, kv ...any) { opts.Log.Info(msg, kv...) }

	slot, err := s.claimSlot()
	if err != nil {
		return s, err
	}
	logf("starting etcd and kube-apiserver", "dir", opts.Dir)
	if s.cp, err = startControlPlane(ctx, opts, serviceCIDR(slot)); err != nil {
		return s, err
	}
	s.Config, s.Kubeconfig = s.cp.admin, filepath.Join(opts.Dir, "kubeconfig")
	if s.Client, err = kubernetes.NewForConfig(s.Config); err != nil {
		return s, err
	}

	logf("starting the Kafka-protocol broker (kfake)")
	ports := loadPorts(opts.Dir)
	if err := s.startBroker(ports.free(ports.Broker)); err != nil {
		return s, err
	}

	logf("starting the OCI registry", "blobs", filepath.Join(opts.Dir, "registry"))
	if err := s.startRegistry(ports.free(ports.Registry)); err != nil {
		return s, err
	}
	ports.Broker, ports.Registry = portOf(s.Broker), portOf(s.Registry)
	if err := ports.save(opts.Dir); err != nil {
		return s, err
	}

	ca, err := kubelet.NewCA()
	if err != nil {
		return s, err
	}
	s.KubeletCA = ca.CertPEM()
	if err := os.WriteFile(filepath.Join(opts.Dir, "pki", "kubelet-ca.crt"), s.KubeletCA, 0o600); err != nil {
		return s, err
	}
	logf("starting simulated nodes (simulated kubelet, SIMULATED CRIU)", "nodes", opts.Nodes)
	zones := []string{"sandbox-a", "sandbox-b", "sandbox-c"}
	var nodes []kubelet.NodeSpec
	for i := range opts.Nodes {
		nodes = append(nodes, kubelet.NodeSpec{
			Name:       "node-" + strconv.Itoa(i+1),
			CanRestore: i < opts.Nodes-opts.NodesWithoutRestore,
			Runtime:    nodeRuntime(i, opts.Nodes-opts.NodesWithoutRestore),
			Labels:     map[string]string{"topology.kubernetes.io/zone": zones[i%len(zones)], "topology.kubernetes.io/region": "sandbox"},
		})
	}
	if s.Fleet, err = kubelet.Start(ctx, kubelet.Options{
		Client: s.Client, Config: s.Config, Dir: filepath.Join(opts.Dir, "nodes"), SharedDir: opts.Dir, Nodes: nodes,
		Runtime: kubelet.Runtime{BinDir: opts.BinDir, Registry: s.Registry, ProjectImages: projectImages(s)}, CA: ca,
		Log: opts.Log.WithName("kubelet"), Env: []string{EnvDir + "=" + opts.Dir},
		PodCIDR: fmt.Sprintf("127.%d.0.0/16", 10+2*slot), NodeCIDR: fmt.Sprintf("127.%d.0.0/16", 11+2*slot),
	}); err != nil {
		return s, err
	}

	logf("starting the simulated kube-proxy (loopback ClusterIPs)", "range", serviceCIDR(slot))
	if s.proxy, err = kubeproxy.Start(ctx, s.Client, opts.Log.WithName("kube-proxy")); err != nil {
		return s, err
	}

	if opts.Manager != nil {
		if err := withExtender(&opts); err != nil {
			return s, err
		}
	}
	logf("starting kube-controller-manager and kube-scheduler")
	if err := s.cp.startControllers(ctx, opts); err != nil {
		return s, err
	}
	if opts.Manager != nil {
		logf("starting the ms2m manager (webhooks registered with the API server)")
		if err := s.startManager(ctx, *opts.Manager); err != nil {
			return s, err
		}
	}
	if err := s.waitNodesReady(ctx); err != nil {
		return s, err
	}
	return s, s.writeState()
}

func (s *Sandbox) startRegistry(port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("sandbox: registry: %w", err)
	}
	dir := filepath.Join(s.opts.Dir, "registry")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	manifests := filepath.Join(s.opts.Dir, "registry-manifests")
	if err := os.MkdirAll(manifests, 0o700); err != nil {
		return err
	}
	reg := &persistentManifests{dir: manifests, next: registry.New(registry.WithBlobHandler(registry.NewDiskBlobHandler(dir)),
		registry.Logger(log.New(io.Discard, "", 0)))}
	if err := reg.restoreManifests(); err != nil {
		_ = l.Close()
		return err
	}
	if s.registryPassword, err = registryPassword(s.opts.Dir); err != nil {
		_ = l.Close()
		return err
	}
	s.Registry = l.Addr().String()
	s.registry = &http.Server{Handler: privateRepos{next: reg, password: s.registryPassword}, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.registry.Serve(l) }()
	return s.pushPrivateImages()
}

func (s *Sandbox) writeState() error {
	st := State{PID: os.Getpid(), Kubeconfig: s.Kubeconfig, APIServer: s.Config.Host, Broker: s.Broker, Registry: s.Registry,
		KubeletCA: filepath.Join(s.opts.Dir, "pki", "kubelet-ca.crt"), StartedAt: time.Now().UTC()}
	for _, n := range s.Fleet.Nodes() {
		addr, _ := s.Fleet.KubeletAddress(n)
		st.Nodes = append(st.Nodes, NodeState{Name: n, Kubelet: addr, PodDir: filepath.Join(s.opts.Dir, "nodes", n, "pods")})
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(StateFile(s.opts.Dir), b, 0o600)
}

// Dir is the sandbox's state directory.
func (s *Sandbox) Dir() string { return s.opts.Dir }

// Stop stops everything, pods first, and removes the state file. Data
// (etcd, registry, logs) stays in Dir.
func (s *Sandbox) Stop() {
	if s.stopMgr != nil {
		s.stopMgr()
		<-s.mgrDone
	}
	if s.Fleet != nil {
		s.Fleet.Stop()
	}
	if s.proxy != nil {
		s.proxy.Stop()
	}
	if s.cp != nil {
		s.cp.stop()
	}
	if s.kafka != nil {
		s.kafka.Close()
	}
	if s.registry != nil {
		_ = s.registry.Close()
	}
	if s.slot != nil {
		_ = s.slot.Close() // releases the address range
	}
	_ = os.Remove(StateFile(s.opts.Dir))
}

// DefaultControlPlaneDir is where hack/build-control-plane.sh caches the
// control plane by default; KUBEBUILDER_ASSETS overrides it.
func DefaultControlPlaneDir() string {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d
	}
	root := os.Getenv("MS2M_CACHE")
	if root == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = filepath.Join(os.TempDir(), "cache")
		}
		root = filepath.Join(cache, "ms2m")
	}
	return filepath.Join(root, "control-plane", "k8s-v1.37.2_etcd-v3.6.16")
}

// ports keeps the broker's and registry's ports across restarts of a
// sandbox, so pods configured with them, and checkpoint image references,
// stay valid.
type ports struct {
	Broker   int `json:"broker"`
	Registry int `json:"registry"`
}

func loadPorts(dir string) ports {
	var p ports
	if b, err := os.ReadFile(filepath.Join(dir, "ports.json")); err == nil {
		_ = json.Unmarshal(b, &p)
	}
	return p
}

func (p ports) save(dir string) error {
	b, _ := json.Marshal(p)
	return os.WriteFile(filepath.Join(dir, "ports.json"), b, 0o600)
}

// free returns port when it can be bound now, else 0 (any free port).
func (ports) free(port int) int {
	if port == 0 {
		return 0
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return 0
	}
	_ = l.Close()
	return port
}

func portOf(hostport string) int {
	_, p, _ := net.SplitHostPort(hostport)
	n, _ := strconv.Atoi(p)
	return n
}

// serviceCIDR is the sandbox's service range: loopback addresses, which
// the simulated kube-proxy serves, apart from every slot's pods and nodes.
func serviceCIDR(slot int) string { return fmt.Sprintf("127.250.%d.0/24", slot) }

// maxSlots sandboxes can run side by side on one machine.
const maxSlots = 100

// claimSlot takes a free address range for this sandbox's pods and nodes,
// so that sandboxes running side by side (a developer's and the tests')
// never hand out the same 127.x.y.z. The claim is a lock held while the
// sandbox runs; a crashed sandbox's lock is released with its process.
func (s *Sandbox) claimSlot() (int, error) {
	for i := range maxSlots {
		f, err := os.OpenFile(filepath.Join(os.TempDir(), fmt.Sprintf("ms2m-sandbox-slot-%d.lock", i)), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return 0, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			_ = f.Close()
			continue
		}
		s.slot = f
		return i, nil
	}
	return 0, fmt.Errorf("sandbox: %d sandboxes already run on this machine", maxSlots)
}

// startBroker starts kfake on port (0: any), keeping its topics and the
// groups' committed offsets in <dir>/kafka across restarts.
func (s *Sandbox) startBroker(port int) error {
	var err error
	s.kafka, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(s.opts.Partitions), kfake.Ports(port), kfake.DataDir(filepath.Join(s.opts.Dir, "kafka")))
	if err != nil {
		return fmt.Errorf("sandbox: broker: %w", err)
	}
	s.Broker = s.kafka.ListenAddrs()[0]
	broker.DelayJoinsIntoEmptyGroups(s.kafka, s.opts.KafkaInitialRebalanceDelay)
	return nil
}

// SimulateNodePartition cuts the named node's SIMULATED kubelet off from
// the API server (kubelet.Fleet.SimulateKubeletPartition): its Lease and
// status go stale, so the real kube-controller-manager marks the node
// Ready=Unknown after its node-monitor grace period (40 s), while its pods'
// processes keep running. EndNodePartition reconnects it.
func (s *Sandbox) SimulateNodePartition(node string) error {
	return s.Fleet.SimulateKubeletPartition(node)
}

// EndNodePartition ends SimulateNodePartition: the node heartbeats again
// and its kubelet catches up with its pods.
func (s *Sandbox) EndNodePartition(ctx context.Context, node string) error {
	return s.Fleet.EndKubeletPartition(ctx, node)
}

// RestartBroker stops the Kafka-protocol broker and starts it again on the
// same address with the same data, as a broker restart in a cluster: every
// client loses its connections and must reconnect.
func (s *Sandbox) RestartBroker() error {
	port := portOf(s.Broker)
	s.kafka.Close()
	return s.startBroker(port)
}

// SetCRIUConfig writes a simulated node's /etc/criu/runc.conf, as an
// administrator configures CRIU on a node ("" removes it): the SIMULATED
// CRIU reads it at each dump and restore (simcriu.ReadCRIUOptions), and the
// agent's probe reports it.
func (s *Sandbox) SetCRIUConfig(node, conf string) error {
	p := filepath.Join(s.opts.Dir, "nodes", node, "etc", "criu", "runc.conf")
	if conf == "" {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return err
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(conf), 0o644)
}

// nodeRuntime is the runtime node i simulates, of restoring nodes that
// restore (see Options.NodesWithoutRestore).
func nodeRuntime(i, restoring int) string {
	if restoring >= 4 && i >= restoring/2 && i < restoring {
		return kubelet.FlavourContainerd
	}
	return kubelet.FlavourCRIO
}
