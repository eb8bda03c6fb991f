package scheduler

import (
	"cmp"
	"math"
	"slices"

	corev1 "k8s.io/api/core/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
)

// Weights say how much each criterion counts in a node's score. Only their
// ratios matter.
type Weights struct {
	// FreeResources: cpu and memory left free on the node after placing the
	// pod, as a fraction of allocatable.
	FreeResources int64
	// Locality: same zone as the source node (full), same region (half):
	// the checkpoint image travels less far.
	Locality int64
	// Images: the checkpoint and base images already on the node, so the
	// restore pulls less.
	Images int64
	// FewerInbound: fewer migrations already in flight toward the node.
	FewerInbound int64
}

// DefaultWeights favour room and locality over images and inbound load.
func DefaultWeights() Weights {
	return Weights{FreeResources: 3, Locality: 3, Images: 2, FewerInbound: 2}
}

// Scorer scores nodes from 0 to extenderv1.MaxExtenderPriority (10).
type Scorer struct {
	Weights Weights
}

// DefaultScorer uses DefaultWeights.
func DefaultScorer() Scorer { return Scorer{Weights: DefaultWeights()} }

// Score is the node's score for the pod.
func (s Scorer) Score(p *PodInfo, n NodeState) int64 {
	w := s.Weights
	total := w.FreeResources + w.Locality + w.Images + w.FewerInbound
	if total <= 0 {
		return extenderv1.MinExtenderPriority
	}
	inbound := n.Inbound
	if p.ownTarget != "" && p.ownTarget == n.Name {
		inbound--
	}
	sum := float64(w.FreeResources)*freeFraction(p, n) +
		float64(w.Locality)*locality(p, n.NodeInfo) +
		float64(w.Images)*imageFraction(p, n.NodeInfo) +
		float64(w.FewerInbound)/float64(1+max(inbound, 0))
	score := int64(math.Round(sum / float64(total) * float64(extenderv1.MaxExtenderPriority)))
	return min(max(score, extenderv1.MinExtenderPriority), extenderv1.MaxExtenderPriority)
}

// freeFraction is the mean of the cpu and memory fractions left free after
// placement, 0 when the pod does not fit.
func freeFraction(p *PodInfo, n NodeState) float64 {
	used := n.Requested.add(p.Requests)
	frac := func(alloc, used int64) float64 {
		if alloc <= 0 || used >= alloc {
			return 0
		}
		return float64(alloc-used) / float64(alloc)
	}
	return (frac(n.Allocatable.MilliCPU, used.MilliCPU) + frac(n.Allocatable.Memory, used.Memory)) / 2
}

func locality(p *PodInfo, n *NodeInfo) float64 {
	if p.Source == nil {
		return 0
	}
	switch {
	case p.Source.Zone != "" && p.Source.Zone == n.Zone && p.Source.Region == n.Region:
		return 1
	case p.Source.Region != "" && p.Source.Region == n.Region:
		return 0.5
	}
	return 0
}

func imageFraction(p *PodInfo, n *NodeInfo) float64 {
	if len(p.Images) == 0 {
		return 0
	}
	have := 0
	for i, img := range p.Images {
		if n.slot >= 0 && p.imageSets[i].Has(n) || n.slot < 0 && n.hasImageScan(img) {
			have++
		}
	}
	return float64(have) / float64(len(p.Images))
}

// Ranked is a node with its score.
type Ranked struct {
	Node  string
	Score int64
}

// Ranking is the outcome of RankNodes: nodes that fit, best first, and why
// each other node was refused.
type Ranking struct {
	Fit     []Ranked
	Refused map[string]Verdict
}

// RankNodes runs the extender's filter and scoring over candidates (node
// names the State knows) for pod. It is the code the scheduler extender
// runs, packaged for the migration controller's automatic target choice:
// Fit[0] is the node to pick. Ties go to the lexically smaller name so the
// choice is stable.
func RankNodes(pod *corev1.Pod, candidates []string, st State, checks Chain, scorer Scorer) Ranking {
	p := NewPodInfo(pod, st)
	r := Ranking{Refused: map[string]Verdict{}}
	for i, n := range st.LookupNodes(nil, candidates) {
		name := candidates[i]
		if n.NodeInfo == nil {
			r.Refused[name] = unknownNode
			continue
		}
		if v, ok := checks.Evaluate(p, n.NodeInfo); !ok {
			r.Refused[name] = v
			continue
		}
		r.Fit = append(r.Fit, Ranked{Node: name, Score: scorer.Score(p, n)})
	}
	slices.SortFunc(r.Fit, func(a, b Ranked) int {
		if c := cmp.Compare(b.Score, a.Score); c != 0 {
			return c
		}
		return cmp.Compare(a.Node, b.Node)
	})
	return r
}

// unknownNode refuses a node the cache has not seen yet (it was just
// created): resolvable, the next attempt will know it.
var unknownNode = Verdict{Check: "known-node", Reason: ReasonUnknownNode, Message: "node is not yet in the ms2m extender's cache"}
