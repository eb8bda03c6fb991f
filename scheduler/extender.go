package scheduler

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
)

// The extender's verbs, relative to the urlPrefix in the scheduler's
// configuration.
const (
	FilterPath     = "/filter"
	PrioritizePath = "/prioritize"
)

// DefaultMaxRequestBytes caps a request body. A nodeCacheCapable request
// for 5,000 nodes is about 100 KiB; without nodeCacheCapable the scheduler
// sends whole Node objects (several KiB each with their image lists), so
// large clusters should use nodeCacheCapable.
const DefaultMaxRequestBytes = 32 << 20

// Extender serves the kube-scheduler extender protocol (filter and
// prioritize) over State.
type Extender struct {
	State           State
	Checks          Chain
	Scorer          Scorer
	MaxRequestBytes int64
	Log             logr.Logger
}

// NewExtender returns an Extender with the default checks and scoring.
func NewExtender(st State, log logr.Logger) *Extender {
	return &Extender{State: st, Checks: DefaultChecks(), Scorer: DefaultScorer(), MaxRequestBytes: DefaultMaxRequestBytes, Log: log}
}

// ServeHTTP routes FilterPath and PrioritizePath.
func (e *Extender) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case FilterPath, PrioritizePath:
	default:
		e.refuse(w, r, http.StatusNotFound, fmt.Errorf("no extender verb at %s (serving %s and %s)", r.URL.Path, FilterPath, PrioritizePath))
		return
	}
	s := getScratch()
	defer putScratch(s)
	args, status, err := e.decode(w, r, s)
	if err != nil {
		e.refuse(w, r, status, err)
		return
	}
	if r.URL.Path == FilterPath {
		e.filter(args, s)
		var last map[string]int // for appendRefused
		if s.hasRepeats(args) {
			last = s.last
		}
		if s.out, err = appendFilterResult(s.out[:0], args, s.outcomes, last); err != nil {
			e.refuse(w, r, http.StatusBadRequest, fmt.Errorf("encoding the filter result: %w", err))
			return
		}
	} else {
		s.priorities = e.prioritize(args, s, s.priorities[:0])
		s.out = encodePriorities(s.out[:0], s.priorities)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	// With the length known, net/http writes the body as it is rather than
	// chunked.
	h.Set("Content-Length", strconv.Itoa(len(s.out)))
	if _, err := w.Write(s.out); err != nil {
		e.Log.V(1).Info("writing the extender response failed", "path", r.URL.Path, "err", err)
	}
}

// refuse answers a bad request with a 4xx and logs why: the scheduler only
// shows the status code, so the reason is in the manager's log.
func (e *Extender) refuse(w http.ResponseWriter, r *http.Request, status int, err error) {
	e.Log.Info("refused scheduler extender request", "path", r.URL.Path, "remote", r.RemoteAddr, "status", status, "reason", err.Error())
	http.Error(w, err.Error(), status)
}

// decode reads the request into s. The node names it returns are
// substrings of s.body: they are valid until s goes back to the pool.
func (e *Extender) decode(w http.ResponseWriter, r *http.Request, s *scratch) (*extenderv1.ExtenderArgs, int, error) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return nil, http.StatusMethodNotAllowed, fmt.Errorf("method %s: the extender protocol uses POST", r.Method)
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return nil, http.StatusUnsupportedMediaType, fmt.Errorf("content type %q: want application/json", ct)
		}
	}
	limit := e.MaxRequestBytes
	if limit <= 0 {
		limit = DefaultMaxRequestBytes
	}
	var err error
	s.body, err = appendBody(s.body[:0], http.MaxBytesReader(w, r.Body, limit), r.ContentLength, limit)
	if err != nil {
		if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
			return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("request body exceeds %d bytes", limit)
		}
		return nil, http.StatusBadRequest, fmt.Errorf("reading the request: %w", err)
	}
	args, err := decodeArgsInto(s.body, s.names[:0])
	if err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("decoding ExtenderArgs: %w", err)
	}
	if args.NodeNames != nil {
		s.names = *args.NodeNames // keep the grown slice for the next request
	}
	if errs := validateArgs(args); len(errs) > 0 {
		return nil, http.StatusBadRequest, errs.ToAggregate()
	}
	return args, 0, nil
}

// readBody reads the whole body, sized up front when the length is known.
func readBody(r io.Reader, length, limit int64) ([]byte, error) {
	return appendBody(nil, r, length, limit)
}

// appendBody appends the whole body to dst, growing it once up front when
// the length is known.
func appendBody(dst []byte, r io.Reader, length, limit int64) ([]byte, error) {
	if length > 0 && length <= limit {
		// One byte more than the body, so the read that reports its end
		// does not make append double the buffer.
		dst = slices.Grow(dst, int(length)+1)
	}
	for {
		if len(dst) == cap(dst) {
			dst = slices.Grow(dst, bytes.MinRead)
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		switch {
		case err == io.EOF:
			return dst, nil
		case err != nil:
			return dst, err
		}
	}
}

func validateArgs(args *extenderv1.ExtenderArgs) field.ErrorList {
	var errs field.ErrorList
	if args.Pod == nil {
		errs = append(errs, field.Required(field.NewPath("Pod"), "the pod being scheduled"))
	}
	if args.NodeNames == nil && args.Nodes == nil {
		errs = append(errs, field.Required(field.NewPath("NodeNames"), "NodeNames (nodeCacheCapable) or Nodes"))
	}
	return errs
}

// count is the number of nodes in the request.
func count(args *extenderv1.ExtenderArgs) int {
	if args.NodeNames != nil {
		return len(*args.NodeNames)
	}
	return len(args.Nodes.Items)
}

// nodeName is the name of the request's i-th node.
func nodeName(args *extenderv1.ExtenderArgs, i int) string {
	if args.NodeNames != nil {
		return (*args.NodeNames)[i]
	}
	return args.Nodes.Items[i].Name
}

// resolve puts the request's nodes into s.nodes, in its order: names
// through the State (nodeCacheCapable), in one pass; objects as the
// scheduler sent them, with the load the State knows. A node the State
// does not know has a nil NodeInfo.
func (e *Extender) resolve(args *extenderv1.ExtenderArgs, s *scratch) {
	if args.NodeNames != nil {
		s.nodes = e.State.LookupNodes(s.nodes, *args.NodeNames)
		return
	}
	s.nodes = s.nodes[:0]
	for i := range args.Nodes.Items {
		obj := &args.Nodes.Items[i]
		n, _ := e.State.Node(obj.Name)
		n.NodeInfo = NewNodeInfo(obj, false)
		s.nodes = append(s.nodes, n)
	}
}

// filter decides every node of the request into s.outcomes, in its order.
func (e *Extender) filter(args *extenderv1.ExtenderArgs, s *scratch) {
	p := NewPodInfo(args.Pod, e.State)
	e.resolve(args, s)
	s.outcomes = slices.Grow(s.outcomes[:0], len(s.nodes))
	s.refusals = s.refusals[:0]
	clear(s.moreRefusals)
	refused := 0
	for _, n := range s.nodes {
		v, ok := unknownNode, false
		if n.NodeInfo != nil {
			v, ok = e.Checks.Evaluate(p, n.NodeInfo)
		}
		if ok {
			s.outcomes = append(s.outcomes, nil)
			continue
		}
		s.outcomes = append(s.outcomes, s.refusalFor(v))
		refused++
	}
	if refused > 0 && e.Log.V(1).Enabled() {
		e.Log.V(1).Info("filtered nodes", "pod", args.Pod.Namespace+"/"+args.Pod.Name, "fit", len(s.nodes)-refused, "refused", refused)
	}
}

// Filter keeps the nodes that pass Checks and reports every other with its
// reason, in the form the request came in (names or objects).
func (e *Extender) Filter(args *extenderv1.ExtenderArgs) *extenderv1.ExtenderFilterResult {
	s := getScratch()
	defer putScratch(s)
	e.filter(args, s)
	res := &extenderv1.ExtenderFilterResult{
		FailedNodes:                extenderv1.FailedNodesMap{},
		FailedAndUnresolvableNodes: extenderv1.FailedNodesMap{},
	}
	var names []string
	var nodes []corev1.Node
	if args.NodeNames != nil {
		names = make([]string, 0, len(s.outcomes))
	} else {
		nodes = make([]corev1.Node, 0, len(s.outcomes))
	}
	for i, r := range s.outcomes {
		switch {
		case r == nil && args.NodeNames != nil:
			names = append(names, nodeName(args, i))
		case r == nil:
			nodes = append(nodes, args.Nodes.Items[i])
		case r.verdict.Unresolvable:
			res.FailedAndUnresolvableNodes[nodeName(args, i)] = r.text
		default:
			res.FailedNodes[nodeName(args, i)] = r.text
		}
	}
	if args.NodeNames != nil {
		res.NodeNames = &names
	} else {
		res.Nodes = &corev1.NodeList{Items: nodes}
	}
	return res
}

// prioritize appends the score of every node of the request, in its order,
// to dst. Nodes the State does not know score 0.
func (e *Extender) prioritize(args *extenderv1.ExtenderArgs, s *scratch, dst extenderv1.HostPriorityList) extenderv1.HostPriorityList {
	p := NewPodInfo(args.Pod, e.State)
	e.resolve(args, s)
	dst = slices.Grow(dst, len(s.nodes))
	for i, n := range s.nodes {
		h := extenderv1.HostPriority{Host: nodeName(args, i)}
		if n.NodeInfo != nil {
			h.Score = e.Scorer.Score(p, n)
		}
		dst = append(dst, h)
	}
	return dst
}

// Prioritize scores every node of the request, in its order. Nodes the
// State does not know score 0.
func (e *Extender) Prioritize(args *extenderv1.ExtenderArgs) extenderv1.HostPriorityList {
	s := getScratch()
	defer putScratch(s)
	return e.prioritize(args, s, make(extenderv1.HostPriorityList, 0, count(args)))
}
