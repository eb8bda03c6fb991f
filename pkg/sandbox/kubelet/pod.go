package kubelet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// podRuntime is one pod on a simulated node.
type podRuntime struct {
	f     *Fleet
	key   string
	uid   types.UID
	qos   corev1.PodQOSClass
	node  *node
	dir   string
	sock  string
	mu    sync.Mutex
	ip    string
	ctrs  []*container
	inits []*container
	start time.Time
	phase string // "", "starting", "started", "terminating"
}

func (f *Fleet) runtimeFor(pod *corev1.Pod, n *node) *podRuntime {
	key := pod.Namespace + "/" + pod.Name
	f.mu.Lock()
	defer f.mu.Unlock()
	pr := f.running[key]
	if pr != nil && pr.uid == pod.UID {
		return pr
	}
	if pr != nil { // same name, new pod (a StatefulSet's replacement)
		go pr.release(5 * time.Second)
	}
	sum := sha256.Sum256([]byte(string(pod.UID)))
	pr = &podRuntime{
		f: f, key: key, uid: pod.UID, qos: pod.Status.QOSClass, node: n, start: time.Now(),
		dir:  f.PodDir(n.spec.Name, pod.Namespace, pod.Name),
		sock: filepath.Join(f.sockDir, hex.EncodeToString(sum[:6])),
	}
	for _, c := range pod.Spec.InitContainers {
		pr.inits = append(pr.inits, &container{spec: c, st: ctrState{name: c.Name, image: c.Image}})
	}
	for _, c := range pod.Spec.Containers {
		pr.ctrs = append(pr.ctrs, &container{spec: c, st: ctrState{name: c.Name, image: c.Image}})
	}
	f.running[key] = pr
	return pr
}

// drop forgets a pod that is gone from the API server.
func (f *Fleet) drop(key string) {
	f.mu.Lock()
	pr := f.running[key]
	delete(f.running, key)
	f.mu.Unlock()
	if pr != nil {
		go pr.release(5 * time.Second)
	}
}

func (f *Fleet) sync(ctx context.Context, key string) error {
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	pod, err := f.pods.Pods(ns).Get(name)
	nodeName := ""
	if err == nil {
		nodeName = pod.Spec.NodeName
	}
	if f.partitioned(nodeName, key) {
		// A kubelet cut off from the API server neither sees nor writes
		// anything; EndKubeletPartition syncs the node's pods again.
		return nil
	}
	if apierrors.IsNotFound(err) {
		f.drop(key)
		return nil
	}
	if err != nil {
		return err
	}
	n := f.nodes[pod.Spec.NodeName]
	if n == nil {
		return nil
	}
	pr := f.runtimeFor(pod, n)
	pr.mu.Lock()
	phase := pr.phase
	switch {
	case pod.DeletionTimestamp != nil:
		if phase != "terminating" {
			pr.phase = "terminating"
			grace := time.Duration(ptr.Deref(pod.DeletionGracePeriodSeconds, 30)) * time.Second
			go pr.terminate(ctx, pod, grace)
		}
		pr.mu.Unlock()
		return nil
	case phase == "" && (pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed):
		pr.mu.Unlock()
		return nil // finished before this sandbox started: nothing to run
	case phase == "":
		pr.phase = "starting"
		if pod.Status.PodIP != "" && f.podIPs.reserve(pod.Status.PodIP) {
			pr.ip = pod.Status.PodIP // keep the address across sandbox restarts
		}
		go pr.run(ctx, pod)
	case phase == "started":
		pr.restartExited(pod)
	}
	pr.mu.Unlock()
	return pr.updateStatus(ctx, pod)
}

// updateStatus writes the pod's status when it changed.
func (pr *podRuntime) updateStatus(ctx context.Context, pod *corev1.Pod) error {
	pr.mu.Lock()
	if pr.ip == "" {
		pr.mu.Unlock()
		return nil
	}
	ctrs := make([]ctrState, len(pr.ctrs))
	for i, c := range pr.ctrs {
		ctrs[i] = c.st
	}
	inits := make([]ctrState, len(pr.inits))
	for i, c := range pr.inits {
		inits[i] = c.st
	}
	st := podStatus(pod, ctrs, inits, pr.ip, pr.node.ip, pr.start, metav1.Now())
	pr.mu.Unlock()
	if equality.Semantic.DeepEqual(pod.Status, st) {
		return nil
	}
	pod = pod.DeepCopy()
	pod.Status = st
	_, err := pr.f.opts.Client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// lookup finds a running pod's container for the checkpoint API.
func (f *Fleet) lookup(nodeName, namespace, pod, ctr string) (*podRuntime, *container, error) {
	f.mu.Lock()
	pr := f.running[namespace+"/"+pod]
	f.mu.Unlock()
	if pr == nil || pr.node.spec.Name != nodeName {
		return nil, nil, fmt.Errorf("pod %s/%s does not exist on node %s", namespace, pod, nodeName)
	}
	for _, c := range pr.ctrs {
		if c.spec.Name == ctr {
			return pr, c, nil
		}
	}
	names := make([]string, 0, len(pr.ctrs))
	for _, c := range pr.ctrs {
		names = append(names, c.spec.Name)
	}
	return nil, nil, fmt.Errorf("container %s does not exist in pod %s/%s (containers: %s)", ctr, namespace, pod, strings.Join(names, ", "))
}
