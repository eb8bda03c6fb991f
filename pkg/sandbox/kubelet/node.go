package kubelet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	migrationv1alpha1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/simcriu"
)

const (
	// KubeletVersion is what simulated nodes report.
	KubeletVersion = "v1.37.2"
	// RuntimeVersion is the simulated runtime's version string.
	RuntimeVersion = "ms2m-sim://0.1.0"
	leaseDuration  = 40 * time.Second
	leaseRenew     = 10 * time.Second
	statusRefresh  = time.Minute
	kubeletPort    = 10250
)

type node struct {
	f       *Fleet
	spec    NodeSpec
	ip      string
	apiAddr string
	srv     *http.Server
	// partitioned cuts the node's kubelet off from the API server (see
	// Fleet.SimulateKubeletPartition).
	partitioned atomic.Bool
	// auth is the kubelet API's memory of callers it let in.
	auth authCache

	// images is the node's image store: every image a container on this
	// node was started from (pulled), by repository and tag or digest.
	imagesMu sync.Mutex
	images   map[string]bool
}

// pulled records that the node holds image, as after the kubelet pulled it.
func (n *node) pulled(image string) {
	n.imagesMu.Lock()
	defer n.imagesMu.Unlock()
	if n.images == nil {
		n.images = map[string]bool{}
	}
	n.images[imageKey(image)] = true
}

// holds reports whether the node's image store has image.
func (n *node) holds(image string) bool {
	n.imagesMu.Lock()
	defer n.imagesMu.Unlock()
	return n.images[imageKey(image)]
}

// imageKey names an image as the store does: fully qualified
// ("nginx" is docker.io/library/nginx:latest).
func imageKey(image string) string {
	ref, err := name.ParseReference(image, name.WeakValidation)
	if err != nil {
		return image
	}
	return ref.Name()
}

func kernelVersion() string {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return "unknown"
	}
	var b strings.Builder
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	return b.String()
}

// newNode starts the node's kubelet API and registers it.
func (f *Fleet) newNode(ctx context.Context, spec NodeSpec) (*node, error) {
	ip, err := f.nodeIPs.get()
	if err != nil {
		return nil, err
	}
	n := &node{f: f, spec: spec, ip: ip}
	if err := mkdir(filepath.Join(f.opts.Dir, spec.Name, "pods")); err != nil {
		return nil, err
	}
	if err := n.serve(); err != nil {
		return nil, err
	}
	if err := n.register(ctx); err != nil {
		n.stop()
		return nil, fmt.Errorf("registering node %s: %w", spec.Name, err)
	}
	return n, nil
}

// serve listens on the node's address, port 10250 when free (each node
// has its own address), any free port otherwise.
func (n *node) serve() error {
	l, err := net.Listen("tcp", net.JoinHostPort(n.ip, strconv.Itoa(kubeletPort)))
	if err != nil {
		if l, err = net.Listen("tcp", net.JoinHostPort(n.ip, "0")); err != nil {
			return fmt.Errorf("node %s: kubelet API: %w", n.spec.Name, err)
		}
	}
	tlsCfg, err := n.f.tlsConfig(n.ip)
	if err != nil {
		_ = l.Close()
		return err
	}
	n.apiAddr = l.Addr().String()
	n.srv = &http.Server{Handler: n.handler(), TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := n.srv.ServeTLS(l, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.f.log.Error(err, "kubelet API stopped", "node", n.spec.Name)
		}
	}()
	return nil
}

func (n *node) stop() {
	if n.srv != nil {
		_ = n.srv.Close()
	}
}

func (n *node) labels() map[string]string {
	l := map[string]string{
		corev1.LabelHostname: n.spec.Name, corev1.LabelOSStable: "linux", corev1.LabelArchStable: runtime.GOARCH,
		"node.kubernetes.io/instance-type": "sandbox",
	}
	if n.spec.CanRestore {
		l[migrationv1alpha1.LabelCheckpointRestore] = "true"
		l[migrationv1alpha1.LabelRuntime] = n.spec.flavour()
		l[migrationv1alpha1.LabelRuntimeVersion] = flavourVersions[n.spec.flavour()]
		l[migrationv1alpha1.LabelCRIUVersion] = "simulated"
	}
	for k, v := range n.spec.Labels {
		l[k] = v
	}
	return l
}

// runtimeVersion says, as a runtime's version string would, which runtime
// the node simulates and whether it restores checkpoints (the agent's
// probe reads it): "ms2m-sim://0.1.0 (simulating cri-o 1.37.0)".
func (n *node) runtimeVersion() string {
	v := fmt.Sprintf("%s (simulating %s %s)", RuntimeVersion, n.spec.flavour(), flavourVersions[n.spec.flavour()])
	if n.spec.CanRestore {
		return v
	}
	return v + " (restore disabled)"
}

func (n *node) status(now metav1.Time) corev1.NodeStatus {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("32Gi"),
		corev1.ResourcePods: resource.MustParse("250"), corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	_, port, _ := net.SplitHostPort(n.apiAddr)
	p, _ := strconv.Atoi(port)
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return corev1.NodeStatus{
		Capacity: capacity, Allocatable: capacity,
		Conditions: []corev1.NodeCondition{
			cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "simulated kubelet"),
			cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "simulated kubelet"),
			cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "simulated kubelet"),
			cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "simulated kubelet is posting ready status"),
		},
		Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.ip}, {Type: corev1.NodeHostName, Address: n.spec.Name}},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(p)}},
		NodeInfo: corev1.NodeSystemInfo{
			MachineID: n.spec.Name, SystemUUID: n.spec.Name, BootID: n.spec.Name,
			KernelVersion: kernelVersion(), OSImage: "ms2m sandbox (simulated kubelet, " + simcriu.RuntimeName + ")",
			ContainerRuntimeVersion: n.runtimeVersion(), KubeletVersion: KubeletVersion,
			OperatingSystem: "linux", Architecture: runtime.GOARCH,
		},
	}
}

// register creates (or, after a sandbox restart, updates) the Node and its
// Lease.
func (n *node) register(ctx context.Context) error {
	nodes := n.f.opts.Client.CoreV1().Nodes()
	obj, err := nodes.Get(ctx, n.spec.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		obj, err = nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.spec.Name, Labels: n.labels()}}, metav1.CreateOptions{})
	} else if err == nil {
		for k, v := range n.labels() {
			if obj.Labels == nil {
				obj.Labels = map[string]string{}
			}
			obj.Labels[k] = v
		}
		obj, err = nodes.Update(ctx, obj, metav1.UpdateOptions{})
	}
	if err != nil {
		return err
	}
	obj.Status = n.status(metav1.Now())
	if _, err := nodes.UpdateStatus(ctx, obj, metav1.UpdateOptions{}); err != nil {
		return err
	}
	return n.renewLease(ctx, obj)
}

func (n *node) renewLease(ctx context.Context, owner *corev1.Node) error {
	leases := n.f.opts.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(ctx, n.spec.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: n.spec.Name, Namespace: corev1.NamespaceNodeLease},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(n.spec.Name), LeaseDurationSeconds: ptr.To(int32(leaseDuration.Seconds())),
				RenewTime: &now},
		}
		if owner != nil {
			l.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: owner.Name, UID: owner.UID}}
		}
		_, err = leases.Create(ctx, l, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.RenewTime = &now
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}

// heartbeat renews every node's Lease and, less often, its Ready
// condition, as the kubelet does, so the node lifecycle controller keeps
// the nodes Ready and untainted.
func (f *Fleet) heartbeat(ctx context.Context) {
	lease := time.NewTicker(leaseRenew)
	defer lease.Stop()
	status := time.NewTicker(statusRefresh)
	defer status.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-lease.C:
			for _, n := range f.nodes {
				if n.partitioned.Load() {
					continue
				}
				if err := n.renewLease(ctx, nil); err != nil && ctx.Err() == nil {
					f.log.Error(err, "renewing lease", "node", n.spec.Name)
				}
			}
		case <-status.C:
			for _, n := range f.nodes {
				if n.partitioned.Load() {
					continue
				}
				if err := n.refreshStatus(ctx); err != nil && ctx.Err() == nil {
					f.log.Error(err, "updating node status", "node", n.spec.Name)
				}
			}
		}
	}
}

func (n *node) refreshStatus(ctx context.Context) error {
	nodes := n.f.opts.Client.CoreV1().Nodes()
	obj, err := nodes.Get(ctx, n.spec.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	st := n.status(metav1.Now())
	for i, c := range st.Conditions {
		for _, old := range obj.Status.Conditions {
			if old.Type == c.Type && old.Status == c.Status {
				st.Conditions[i].LastTransitionTime = old.LastTransitionTime
			}
		}
	}
	st.Images = obj.Status.Images
	obj.Status = st
	_, err = nodes.UpdateStatus(ctx, obj, metav1.UpdateOptions{})
	return err
}
