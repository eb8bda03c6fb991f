// Package kubeproxy is the sandbox's SIMULATED kube-proxy: it makes a
// Service's ClusterIP reach the Service's Ready pods, so that what a real
// cluster reaches through Services works unchanged in the sandbox — the API
// server calling an admission webhook by its Service, the kube-scheduler
// calling an extender.
//
// A real kube-proxy programs the kernel (iptables, IPVS, nftables) from
// EndpointSlices. The sandbox can do neither: its pods' addresses are
// loopback addresses (127.x.y.z), which the API server refuses in
// Endpoints and EndpointSlices, and its service range is a loopback range
// too. So the simulation listens on ClusterIP:port itself (every 127/8
// address is local on Linux) and forwards each TCP connection to one Ready,
// not terminating pod that the Service selects, round robin, resolving
// named target ports from the pod's container ports as kube-proxy does.
// UDP, session affinity, selectorless Services and traffic policies are
// not simulated.
package kubeproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Proxy forwards the loopback ClusterIPs of Services to their pods.
type Proxy struct {
	pods     corelisters.PodLister
	services corelisters.ServiceLister
	log      logr.Logger

	mu        sync.Mutex
	listeners map[string]*listener // by ip:port
	conns     map[net.Conn]struct{}
	stopped   bool
	next      atomic.Uint64 // round robin over the Ready pods
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// listener serves one ClusterIP:port of one Service.
type listener struct {
	l         net.Listener
	namespace string
	service   string
	port      string // the service port's name, or its number
}

// Start watches Services and pods and serves every loopback ClusterIP
// until ctx ends or Stop.
func Start(ctx context.Context, client kubernetes.Interface, log logr.Logger) (*Proxy, error) {
	ctx, cancel := context.WithCancel(ctx)
	factory := informers.NewSharedInformerFactory(client, 0)
	p := &Proxy{
		pods: factory.Core().V1().Pods().Lister(), services: factory.Core().V1().Services().Lister(),
		log: log, listeners: map[string]*listener{}, conns: map[net.Conn]struct{}{}, cancel: cancel,
	}
	svcInformer := factory.Core().V1().Services().Informer()
	_, _ = svcInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { p.sync() },
		UpdateFunc: func(any, any) { p.sync() },
		DeleteFunc: func(any) { p.sync() },
	})
	podInformer := factory.Core().V1().Pods().Informer()
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), svcInformer.HasSynced, podInformer.HasSynced) {
		cancel()
		return nil, errors.New("simulated kube-proxy: informers did not sync")
	}
	p.sync()
	return p, nil
}

// Stop closes every listener and connection.
func (p *Proxy) Stop() {
	p.cancel()
	p.mu.Lock()
	p.stopped = true
	for key, l := range p.listeners {
		_ = l.l.Close()
		delete(p.listeners, key)
	}
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// track records an open connection so Stop can close it; false when the
// proxy is stopping.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// sync opens a listener for every loopback ClusterIP:port and closes those
// whose Service port is gone.
func (p *Proxy) sync() {
	svcs, err := p.services.List(labels.Everything())
	if err != nil {
		return
	}
	want := map[string]listener{}
	for _, svc := range svcs {
		if len(svc.Spec.Selector) == 0 {
			continue
		}
		for _, ip := range svc.Spec.ClusterIPs {
			if addr := net.ParseIP(ip); addr == nil || !addr.IsLoopback() {
				continue
			}
			for _, sp := range svc.Spec.Ports {
				if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
					continue
				}
				want[net.JoinHostPort(ip, strconv.Itoa(int(sp.Port)))] = listener{namespace: svc.Namespace, service: svc.Name, port: portKey(sp)}
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	for addr, l := range p.listeners {
		if w, ok := want[addr]; !ok || w.namespace != l.namespace || w.service != l.service || w.port != l.port {
			_ = l.l.Close()
			delete(p.listeners, addr)
		}
	}
	for addr, w := range want {
		if _, ok := p.listeners[addr]; ok {
			continue
		}
		nl, err := net.Listen("tcp", addr)
		if err != nil {
			p.log.Error(err, "simulated kube-proxy cannot serve a ClusterIP", "service", w.namespace+"/"+w.service, "address", addr)
			continue
		}
		l := &listener{l: nl, namespace: w.namespace, service: w.service, port: w.port}
		p.listeners[addr] = l
		p.wg.Go(func() { p.serve(l) })
	}
}

func portKey(sp corev1.ServicePort) string {
	if sp.Name != "" {
		return sp.Name
	}
	return strconv.Itoa(int(sp.Port))
}

func (p *Proxy) serve(l *listener) {
	for {
		conn, err := l.l.Accept()
		if err != nil {
			return
		}
		p.wg.Go(func() { p.forward(l, conn) })
	}
}

// forward connects conn to one of the Service's Ready pods; without one
// the connection is closed, as a Service without endpoints rejects it.
func (p *Proxy) forward(l *listener, conn net.Conn) {
	defer func() { _ = conn.Close() }()
	if !p.track(conn) {
		return
	}
	defer p.untrack(conn)
	backend, err := p.backend(l.namespace, l.service, l.port)
	if err != nil {
		p.log.V(1).Info("simulated kube-proxy: connection rejected", "service", l.namespace+"/"+l.service, "reason", err.Error())
		return
	}
	up, err := net.DialTimeout("tcp", backend, 5*time.Second)
	if err != nil {
		p.log.V(1).Info("simulated kube-proxy: backend unreachable", "service", l.namespace+"/"+l.service, "backend", backend, "reason", err.Error())
		return
	}
	defer func() { _ = up.Close() }()
	if !p.track(up) {
		return
	}
	defer p.untrack(up)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(up, conn)
	go pipe(conn, up)
	<-done
	<-done
}

// backend picks the address (podIP:targetPort) a new connection to the
// Service's port (its name, or its number when unnamed) goes to.
func (p *Proxy) backend(namespace, service, port string) (string, error) {
	svc, err := p.services.Services(namespace).Get(service)
	if err != nil {
		return "", err
	}
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if portKey(svc.Spec.Ports[i]) == port {
			sp = &svc.Spec.Ports[i]
		}
	}
	if sp == nil {
		return "", fmt.Errorf("service %s/%s has no port %s", namespace, service, port)
	}
	pods, err := p.pods.Pods(namespace).List(labels.SelectorFromSet(svc.Spec.Selector))
	if err != nil {
		return "", err
	}
	var ready []string
	for _, pod := range pods {
		if pod.DeletionTimestamp != nil || pod.Status.PodIP == "" || !podReady(pod) {
			continue
		}
		if target, ok := targetPort(pod, sp.TargetPort, sp.Port); ok {
			ready = append(ready, net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(target))))
		}
	}
	if len(ready) == 0 {
		return "", fmt.Errorf("service %s/%s has no Ready pod", namespace, service)
	}
	return ready[p.next.Add(1)%uint64(len(ready))], nil
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// targetPort resolves a Service's targetPort on one pod: a number as is
// (the service port when unset), a name through the pod's container ports.
func targetPort(pod *corev1.Pod, tp intstr.IntOrString, servicePort int32) (int32, bool) {
	switch {
	case tp.Type == intstr.Int && tp.IntVal == 0:
		return servicePort, true
	case tp.Type == intstr.Int:
		return tp.IntVal, true
	}
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == tp.StrVal && (cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP) {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}
