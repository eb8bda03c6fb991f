package scheduler

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	resourcehelper "k8s.io/component-helpers/resource"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// The extender and the controller's target choice read nodes, pods,
// volumes and migrations from the manager's informers.
//
// +kubebuilder:rbac:groups="",resources=nodes;pods;persistentvolumeclaims;persistentvolumes,verbs=get;list;watch
// +kubebuilder:rbac:groups=migration.ms2m.io,resources=statefulmigrations,verbs=get;list;watch

// Cache is the State of a running manager. It is fed by event handlers on
// the manager's shared informers and keeps what a request needs already
// derived (NodeInfo per node, summed requests per node, in-flight
// migrations per target), because a request over 5,000 nodes has no time
// to deep-copy nodes or add up pod quantities.
type Cache struct {
	informers crcache.Informers
	synced    chan struct{}

	mu sync.RWMutex
	// index maps a node name to its slot: a request resolves each of its
	// node names with this one map lookup (LookupNodes), then reads a
	// contiguous slice rather than chasing a pointer per node.
	index      map[string]int32
	slots      []nodeSlot
	freeSlots  []int32
	pods       map[types.UID]podEntry
	migrations map[types.NamespacedName]string // in flight → status.targetNode
	claims     map[types.NamespacedName]*corev1.PersistentVolumeClaim
	volumes    map[string]*corev1.PersistentVolume
	// images maps an image to the slots of the nodes holding it.
	images map[string][]uint64
}

// nodeSlot is everything known about one node name: its NodeInfo (nil
// until the node is seen, or after it is deleted, while pods or migrations
// still name it) and its load. A slot whose name is "" is free.
type nodeSlot struct {
	name      string
	info      *NodeInfo
	requested Resources
	inbound   int
}

type podEntry struct {
	node     string
	requests Resources
}

var _ State = (*Cache)(nil)

// NewCache returns a Cache that Start fills from informers (the manager's
// cache). Add it to the manager as a Runnable.
func NewCache(informers crcache.Informers) *Cache {
	c := newCache()
	c.informers = informers
	return c
}

// NewCacheFrom returns a Cache holding objs (Nodes, Pods,
// PersistentVolumeClaims, PersistentVolumes, StatefulMigrations), already
// synced: for tests and benchmarks, and for callers that have lists.
func NewCacheFrom(objs ...client.Object) *Cache {
	c := newCache()
	for _, o := range objs {
		c.upsert(o)
	}
	close(c.synced)
	return c
}

func newCache() *Cache {
	return &Cache{
		synced:     make(chan struct{}),
		index:      map[string]int32{},
		pods:       map[types.UID]podEntry{},
		migrations: map[types.NamespacedName]string{},
		claims:     map[types.NamespacedName]*corev1.PersistentVolumeClaim{},
		volumes:    map[string]*corev1.PersistentVolume{},
		images:     map[string][]uint64{},
	}
}

// Start registers the event handlers, marks the Cache synced once the
// informers have delivered their initial lists, and blocks until ctx ends.
func (c *Cache) Start(ctx context.Context) error {
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.upsertAny(obj) },
		UpdateFunc: func(_, obj any) { c.upsertAny(obj) },
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if o, ok := obj.(client.Object); ok {
				c.remove(o)
			}
		},
	}
	var regs []toolscache.ResourceEventHandlerRegistration
	for _, obj := range []client.Object{&corev1.Node{}, &corev1.Pod{}, &corev1.PersistentVolumeClaim{}, &corev1.PersistentVolume{}, &v1.StatefulMigration{}} {
		inf, err := c.informers.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("scheduler cache: informer for %T: %w", obj, err)
		}
		reg, err := inf.AddEventHandler(handler)
		if err != nil {
			return fmt.Errorf("scheduler cache: handler for %T: %w", obj, err)
		}
		regs = append(regs, reg)
	}
	synced := make([]toolscache.InformerSynced, len(regs))
	for i, r := range regs {
		synced[i] = r.HasSynced
	}
	if !toolscache.WaitForCacheSync(ctx.Done(), synced...) {
		return ctx.Err()
	}
	close(c.synced)
	<-ctx.Done()
	return nil
}

// NeedLeaderElection is false: every replica answers the scheduler.
func (c *Cache) NeedLeaderElection() bool { return false }

// Synced is closed once the Cache holds the cluster's state.
func (c *Cache) Synced() <-chan struct{} { return c.synced }

func (c *Cache) upsertAny(obj any) {
	if o, ok := obj.(client.Object); ok {
		c.upsert(o)
	}
}

func (c *Cache) upsert(obj client.Object) {
	// Derive outside the lock: NodeInfo and pod requests are the costly part.
	switch o := obj.(type) {
	case *corev1.Node:
		n := NewNodeInfo(o, true)
		c.mu.Lock()
		c.setNodeLocked(o.Name, n)
		c.mu.Unlock()
	case *corev1.Pod:
		e, counts := podEntry{node: o.Spec.NodeName, requests: podRequests(o)}, countsOnNode(o)
		c.mu.Lock()
		c.removePodLocked(o.UID)
		if counts {
			c.pods[o.UID] = e
			// Two statements: slotLocked may grow c.slots.
			i := c.slotLocked(e.node)
			c.slots[i].requested = c.slots[i].requested.add(e.requests)
		}
		c.mu.Unlock()
	case *corev1.PersistentVolumeClaim:
		c.mu.Lock()
		c.claims[client.ObjectKeyFromObject(o)] = o
		c.mu.Unlock()
	case *corev1.PersistentVolume:
		c.mu.Lock()
		c.volumes[o.Name] = o
		c.mu.Unlock()
	case *v1.StatefulMigration:
		key := client.ObjectKeyFromObject(o)
		c.mu.Lock()
		c.removeMigrationLocked(key)
		if t := o.Status.TargetNode; t != "" && !o.Status.Phase.IsTerminal() {
			c.migrations[key] = t
			i := c.slotLocked(t)
			c.slots[i].inbound++
		}
		c.mu.Unlock()
	}
}

func (c *Cache) remove(obj client.Object) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch o := obj.(type) {
	case *corev1.Node:
		c.setNodeLocked(o.Name, nil)
	case *corev1.Pod:
		c.removePodLocked(o.UID)
	case *corev1.PersistentVolumeClaim:
		delete(c.claims, client.ObjectKeyFromObject(o))
	case *corev1.PersistentVolume:
		delete(c.volumes, o.Name)
	case *v1.StatefulMigration:
		c.removeMigrationLocked(client.ObjectKeyFromObject(o))
	}
}

// slotLocked returns the slot of name, taking a free one for a new name.
func (c *Cache) slotLocked(name string) int32 {
	if i, ok := c.index[name]; ok {
		return i
	}
	var i int32
	if k := len(c.freeSlots); k > 0 {
		i, c.freeSlots = c.freeSlots[k-1], c.freeSlots[:k-1]
	} else {
		i = int32(len(c.slots))
		c.slots = append(c.slots, nodeSlot{})
	}
	// A copy of the name, not the Node's own: the keys of all slots then
	// sit together in memory, and the lookups of a request over thousands
	// of nodes do not each miss the CPU cache on a key.
	name = strings.Clone(name)
	c.slots[i].name = name
	c.index[name] = i
	return i
}

// releaseLocked frees a slot that holds nothing any more.
func (c *Cache) releaseLocked(i int32) {
	s := &c.slots[i]
	if s.info == nil && s.requested == (Resources{}) && s.inbound <= 0 {
		delete(c.index, s.name)
		*s = nodeSlot{}
		c.freeSlots = append(c.freeSlots, i)
	}
}

// setNodeLocked stores (or, with nil, removes) a node's NodeInfo, keeping
// the image sets in step.
func (c *Cache) setNodeLocked(name string, n *NodeInfo) {
	i := c.slotLocked(name)
	s := &c.slots[i]
	if old := s.info; old != nil {
		for _, img := range old.images {
			c.clearImageLocked(img, i)
		}
	}
	if n != nil {
		n.slot = i
		for _, img := range n.images {
			bits := c.images[img]
			for int(i/64) >= len(bits) {
				bits = append(bits, 0)
			}
			bits[i/64] |= 1 << (uint(i) % 64)
			c.images[img] = bits
		}
	}
	s.info = n
	c.releaseLocked(i)
}

func (c *Cache) clearImageLocked(img string, slot int32) {
	bits := c.images[img]
	if int(slot/64) < len(bits) {
		bits[slot/64] &^= 1 << (uint(slot) % 64)
	}
	for _, w := range bits {
		if w != 0 {
			return
		}
	}
	delete(c.images, img)
}

func (c *Cache) removePodLocked(uid types.UID) {
	old, ok := c.pods[uid]
	if !ok {
		return
	}
	delete(c.pods, uid)
	i := c.slotLocked(old.node)
	s := &c.slots[i]
	s.requested = Resources{MilliCPU: s.requested.MilliCPU - old.requests.MilliCPU, Memory: s.requested.Memory - old.requests.Memory}
	c.releaseLocked(i)
}

func (c *Cache) removeMigrationLocked(key types.NamespacedName) {
	t, ok := c.migrations[key]
	if !ok {
		return
	}
	delete(c.migrations, key)
	i := c.slotLocked(t)
	c.slots[i].inbound--
	c.releaseLocked(i)
}

// countsOnNode: a pod holds its node's resources from binding until it
// terminates, as for the scheduler.
func countsOnNode(p *corev1.Pod) bool {
	return p.Spec.NodeName != "" && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed
}

func podRequests(p *corev1.Pod) Resources {
	reqs := resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{})
	return Resources{MilliCPU: reqs.Cpu().MilliValue(), Memory: reqs.Memory().Value()}
}

// Node implements State.
func (c *Cache) Node(name string) (NodeState, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	n := c.nodeLocked(name)
	return n, n.NodeInfo != nil
}

// LookupNodes implements State. It holds the read lock for the whole list
// (about 0.3 ms for 5,000 names), so informer events wait at most that
// long, and a request sees one consistent state.
func (c *Cache) LookupNodes(dst []NodeState, names []string) []NodeState {
	dst = slices.Grow(dst[:0], len(names))
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, name := range names {
		dst = append(dst, c.nodeLocked(name))
	}
	return dst
}

func (c *Cache) nodeLocked(name string) NodeState {
	i, ok := c.index[name]
	if !ok {
		return NodeState{}
	}
	s := &c.slots[i]
	if s.info == nil {
		return NodeState{}
	}
	return NodeState{NodeInfo: s.info, Requested: s.requested, Inbound: s.inbound}
}

// Nodes returns every known node name, for callers choosing among all of
// them (the controller's automatic target choice).
func (c *Cache) Nodes() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	names := make([]string, 0, len(c.index))
	for _, s := range c.slots {
		if s.info != nil {
			names = append(names, s.name)
		}
	}
	return names
}

// MigrationTarget implements State.
func (c *Cache) MigrationTarget(key types.NamespacedName) string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.migrations[key]
}

// NodesWithImage implements State. The set is a copy: requests read it
// without the lock.
func (c *Cache) NodesWithImage(image string) NodeSet {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return NodeSet{bits: slices.Clone(c.images[image])}
}

// Claim implements State.
func (c *Cache) Claim(namespace, name string) *corev1.PersistentVolumeClaim {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.claims[types.NamespacedName{Namespace: namespace, Name: name}]
}

// Volume implements State.
func (c *Cache) Volume(name string) *corev1.PersistentVolume {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.volumes[name]
}
