package scheduler

import (
	"sync"

	extenderv1 "k8s.io/kube-scheduler/extender/v1"
)

// scratch holds one request's working memory. Without it a request over
// 5,000 nodes allocates about 1 MiB, and on a small machine the garbage
// collections that follow, not the work, make the slow requests slow
// (docs/scheduler.md, Measured). Requests run in parallel, so scratches
// come from a pool rather than from the Extender.
type scratch struct {
	body  []byte
	names []string
	nodes []NodeState
	// outcomes is the filter's decision for each node of the request: nil
	// when it fits.
	outcomes   []*refusal
	priorities extenderv1.HostPriorityList
	out        []byte
	// refusals are the request's distinct refusals (refusalFor), in the
	// order seen; moreRefusals indexes them past the first few.
	refusals     []*refusal
	moreRefusals map[Verdict]*refusal
	// slotsSeen and namesSeen are hasRepeats', last appendRefused's.
	slotsSeen []uint64
	namesSeen map[string]struct{}
	last      map[string]int
}

// refusal is why the filter refuses nodes.
type refusal struct {
	verdict Verdict
	text    string // what the scheduler shows for the node
	json    string // text as a JSON string
}

// fewRefusals: refusalFor compares a verdict with this many refusals
// before it hashes it.
const fewRefusals = 8

// refusalFor returns the request's refusal for v, made on its first use:
// thousands of nodes refused for one reason share one text, built and
// escaped for JSON once. A request refuses nodes for few distinct reasons,
// and the messages of node-only checks are constants or interned, so
// comparing v with those seen first mostly compares string pointers, which
// is cheaper than hashing v; past fewRefusals a map takes over.
func (s *scratch) refusalFor(v Verdict) *refusal {
	for _, r := range s.refusals[:min(len(s.refusals), fewRefusals)] {
		if r.verdict == v {
			return r
		}
	}
	if r := s.moreRefusals[v]; r != nil {
		return r
	}
	text := v.String()
	r := &refusal{verdict: v, text: text, json: string(appendString(nil, text))}
	if len(s.refusals) >= fewRefusals {
		s.moreRefusals[v] = r
	}
	s.refusals = append(s.refusals, r)
	return r
}

var scratchPool = sync.Pool{New: func() any {
	return &scratch{moreRefusals: map[Verdict]*refusal{}, namesSeen: map[string]struct{}{}, last: map[string]int{}}
}}

// maxPooledBytes: a scratch that served a larger request (node objects
// rather than names) is left to the garbage collector rather than kept.
const maxPooledBytes = 4 << 20

func getScratch() *scratch { return scratchPool.Get().(*scratch) }

func putScratch(s *scratch) {
	if cap(s.body) > maxPooledBytes || cap(s.out) > maxPooledBytes {
		return
	}
	// The slices keep what they point to (NodeInfos, refusals) until the
	// next request overwrites them or the pool drops the scratch: at most
	// one request's worth, and clearing 5,000 entries costs more than
	// that is worth.
	scratchPool.Put(s)
}

// hasRepeats reports whether the request (resolved into s.nodes) names a
// node more than once. The scheduler never does, and then the answer needs
// no de-duplication (appendRefused). Nodes from the cache are told apart by
// slot, in a bitset, so the usual request needs no map; unknown names and
// node objects by name.
func (s *scratch) hasRepeats(args *extenderv1.ExtenderArgs) bool {
	clear(s.slotsSeen)
	clear(s.namesSeen)
	for i, n := range s.nodes {
		if n.NodeInfo != nil && n.slot >= 0 {
			w, bit := int(n.slot/64), uint64(1)<<(n.slot%64)
			for w >= len(s.slotsSeen) {
				s.slotsSeen = append(s.slotsSeen, 0)
			}
			if s.slotsSeen[w]&bit != 0 {
				return true
			}
			s.slotsSeen[w] |= bit
			continue
		}
		name := nodeName(args, i)
		if _, seen := s.namesSeen[name]; seen {
			return true
		}
		s.namesSeen[name] = struct{}{}
	}
	return false
}
