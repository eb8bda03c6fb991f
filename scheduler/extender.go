package scheduler

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

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
	args, status, err := e.decode(w, r)
	if err != nil {
		e.refuse(w, r, status, err)
		return
	}
	var out []byte
	if r.URL.Path == FilterPath {
		if out, err = encodeFilterResult(make([]byte, 0, 24*count(args)+1024), e.Filter(args)); err != nil {
			e.refuse(w, r, http.StatusBadRequest, fmt.Errorf("encoding the filter result: %w", err))
			return
		}
	} else {
		out = encodePriorities(make([]byte, 0, 40*count(args)+2), e.Prioritize(args))
	}
	w.Header().Set("Content-Type", "application/json")
	if _, err := w.Write(out); err != nil {
		e.Log.V(1).Info("writing the extender response failed", "path", r.URL.Path, "err", err)
	}
}

// refuse answers a bad request with a 4xx and logs why: the scheduler only
// shows the status code, so the reason is in the manager's log.
func (e *Extender) refuse(w http.ResponseWriter, r *http.Request, status int, err error) {
	e.Log.Info("refused scheduler extender request", "path", r.URL.Path, "remote", r.RemoteAddr, "status", status, "reason", err.Error())
	http.Error(w, err.Error(), status)
}

func (e *Extender) decode(w http.ResponseWriter, r *http.Request) (*extenderv1.ExtenderArgs, int, error) {
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
	body, err := readBody(http.MaxBytesReader(w, r.Body, limit), r.ContentLength, limit)
	if err != nil {
		if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
			return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("request body exceeds %d bytes", limit)
		}
		return nil, http.StatusBadRequest, fmt.Errorf("reading the request: %w", err)
	}
	args, err := decodeArgs(body)
	if err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("decoding ExtenderArgs: %w", err)
	}
	if errs := validateArgs(args); len(errs) > 0 {
		return nil, http.StatusBadRequest, errs.ToAggregate()
	}
	return args, 0, nil
}

// readBody reads the whole body, sized up front when the length is known.
func readBody(r io.Reader, length, limit int64) ([]byte, error) {
	var buf bytes.Buffer
	if length > 0 && length <= limit {
		buf.Grow(int(length) + bytes.MinRead)
	}
	_, err := buf.ReadFrom(r)
	return buf.Bytes(), err
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

// candidate is one node of a request.
type candidate struct {
	name  string
	node  NodeState
	known bool
	obj   *corev1.Node // the object sent by the scheduler, when it sent objects
}

// count is the number of nodes in the request.
func count(args *extenderv1.ExtenderArgs) int {
	if args.NodeNames != nil {
		return len(*args.NodeNames)
	}
	return len(args.Nodes.Items)
}

// candidate resolves the request's i-th node: a name through the State
// (nodeCacheCapable), an object as the scheduler sent it, with the load
// the State knows. Resolved one at a time, not into a slice: a request over
// 5,000 nodes would otherwise allocate for nothing.
func (e *Extender) candidate(args *extenderv1.ExtenderArgs, i int) candidate {
	if args.NodeNames != nil {
		name := (*args.NodeNames)[i]
		n, ok := e.State.Node(name)
		return candidate{name: name, node: n, known: ok}
	}
	obj := &args.Nodes.Items[i]
	n, _ := e.State.Node(obj.Name)
	n.NodeInfo = NewNodeInfo(obj, false)
	return candidate{name: obj.Name, node: n, known: true, obj: obj}
}

// Filter keeps the nodes that pass Checks and reports every other with its
// reason, in the form the request came in (names or objects).
func (e *Extender) Filter(args *extenderv1.ExtenderArgs) *extenderv1.ExtenderFilterResult {
	p := NewPodInfo(args.Pod, e.State)
	total := count(args)
	res := &extenderv1.ExtenderFilterResult{
		FailedNodes:                extenderv1.FailedNodesMap{},
		FailedAndUnresolvableNodes: extenderv1.FailedNodesMap{},
	}
	var names []string
	var nodes []corev1.Node
	if args.NodeNames != nil {
		names = make([]string, 0, total)
	} else {
		nodes = make([]corev1.Node, 0, total)
	}
	for i := range total {
		c := e.candidate(args, i)
		v, ok := unknownNode, false
		if c.known {
			v, ok = e.Checks.Evaluate(p, c.node.NodeInfo)
		}
		switch {
		case ok && c.obj != nil:
			nodes = append(nodes, *c.obj)
		case ok:
			names = append(names, c.name)
		case v.Unresolvable:
			res.FailedAndUnresolvableNodes[c.name] = v.String()
		default:
			res.FailedNodes[c.name] = v.String()
		}
	}
	if args.NodeNames != nil {
		res.NodeNames = &names
	} else {
		res.Nodes = &corev1.NodeList{Items: nodes}
	}
	if refused := len(res.FailedNodes) + len(res.FailedAndUnresolvableNodes); refused > 0 && e.Log.V(1).Enabled() {
		e.Log.V(1).Info("filtered nodes", "pod", args.Pod.Namespace+"/"+args.Pod.Name, "fit", total-refused, "refused", refused)
	}
	return res
}

// Prioritize scores every node of the request, in its order. Nodes the
// State does not know score 0.
func (e *Extender) Prioritize(args *extenderv1.ExtenderArgs) extenderv1.HostPriorityList {
	p := NewPodInfo(args.Pod, e.State)
	out := make(extenderv1.HostPriorityList, count(args))
	for i := range out {
		c := e.candidate(args, i)
		out[i] = extenderv1.HostPriority{Host: c.name}
		if c.known {
			out[i].Score = e.Scorer.Score(p, c.node)
		}
	}
	return out
}
