package kubelet

import (
	"fmt"
	"net/netip"
	"sync"
)

// ipPool hands out loopback addresses: every sandbox pod and node gets its
// own 127.x.y.z, so processes bind their pod IP exactly as in a real pod.
type ipPool struct {
	mu     sync.Mutex
	prefix netip.Prefix
	next   netip.Addr
	used   map[netip.Addr]bool
}

func newIPPool(prefix string) *ipPool {
	p := netip.MustParsePrefix(prefix)
	return &ipPool{prefix: p, next: p.Addr(), used: map[netip.Addr]bool{}}
}

// get returns a free address, skipping .0 and .255.
func (p *ipPool) get() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range 1 << 16 {
		p.next = p.next.Next()
		if !p.prefix.Contains(p.next) {
			p.next = p.prefix.Addr()
			continue
		}
		b := p.next.As4()
		if b[3] == 0 || b[3] == 255 || p.used[p.next] {
			continue
		}
		p.used[p.next] = true
		return p.next.String(), nil
	}
	return "", fmt.Errorf("no free address in %s", p.prefix)
}

func (p *ipPool) put(ip string) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return
	}
	p.mu.Lock()
	delete(p.used, a)
	p.mu.Unlock()
}

// reserve marks an address in use (a pod that already had it).
func (p *ipPool) reserve(ip string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil || !p.prefix.Contains(a) {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.used[a] {
		return false
	}
	p.used[a] = true
	return true
}
