package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/sets"
)

// Authenticator says who presented a bearer token.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (Identity, error)
}

// MaxRequestBytes bounds a control request's body.
const MaxRequestBytes = 64 << 10

// DefaultCallTimeout bounds a control call that sets no timeoutSeconds.
const DefaultCallTimeout = 30 * time.Second

// callSlack is the time a control call's connection has, past the call's
// timeout, to write its answer.
const callSlack = 10 * time.Second

// Request is the body of the control calls that take one.
type Request struct {
	// TimeoutSeconds bounds the call (default 30).
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
	// Fence is the handover's fence F, or the bound of a replay, per
	// partition.
	Fence map[string]int64 `json:"fence,omitempty"`
	// From is where a replay starts, per partition.
	From map[string]int64 `json:"from,omitempty"`
}

// Call is a decoded, checked Request.
type Call struct {
	Timeout time.Duration
	// Fence and From are nil when the request has none.
	Fence, From map[int]int64
}

// DecodeRequest reads and checks a control request, naming the field at
// fault. An empty body is a request with defaults.
func DecodeRequest(r io.Reader) (Call, error) {
	var req Request
	dec := json.NewDecoder(io.LimitReader(r, MaxRequestBytes+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		return Call{}, fmt.Errorf("invalid request body: %w", err)
	}
	if dec.More() {
		return Call{}, errors.New("invalid request body: trailing data")
	}
	if req.TimeoutSeconds < 0 || req.TimeoutSeconds > 3600 {
		return Call{}, fmt.Errorf("timeoutSeconds: must be between 0 and 3600, got %d", req.TimeoutSeconds)
	}
	c := Call{Timeout: DefaultCallTimeout}
	if req.TimeoutSeconds > 0 {
		c.Timeout = time.Duration(req.TimeoutSeconds) * time.Second
	}
	var err error
	if c.Fence, err = partitionOffsets("fence", req.Fence); err != nil {
		return Call{}, err
	}
	if c.From, err = partitionOffsets("from", req.From); err != nil {
		return Call{}, err
	}
	return c, nil
}

// maxPartition bounds the partition numbers accepted from outside.
const maxPartition = 1 << 20

// partitionOffsets converts {"<partition>": offset} (JSON object keys are
// strings), refusing what is not a partition number or a valid offset.
func partitionOffsets(field string, in map[string]int64) (map[int]int64, error) {
	if in == nil {
		return nil, nil
	}
	out := make(map[int]int64, len(in))
	for k, v := range in {
		p, err := strconv.Atoi(k)
		if err != nil || p < 0 || p > maxPartition || strconv.Itoa(p) != k {
			return nil, fmt.Errorf("%s: partition %q is not a partition number", field, k)
		}
		if v < 0 {
			return nil, fmt.Errorf("%s[%s]: offset must not be negative, got %d", field, k, v)
		}
		out[p] = v
	}
	return out, nil
}

// Control is the sidecar's HTTP control API for the migration controller:
//
//	GET  /position            where the engine stands, with the replay lag
//	POST /caught-up           a replaying target answers once its lag is 0 (or at the timeout)
//	POST /pause, /resume      stop after the in-flight message / continue (never after a fence)
//	POST /fence               stop live consumption, report F
//	POST /rejoin              the rollback: end a pause or a fence, consume live again
//	POST /handover {"fence"}  replay to exactly F, then go live
//	POST /replay {"from", "fence"?}  a standby sidecar replays from offsets
//	GET  /readyz              unauthenticated: 200 only while live
//
// Every call but /readyz needs a bearer token for this sidecar (see
// ControlAudience and TokenVerifier) of one of AllowedUsers, or, for
// /pause and /resume only, of one of NodeAgents bound to a pod on this
// sidecar's node: the node agent that checkpoints the app pauses it for
// exactly as long as the dump (an agent elsewhere is refused).
type Control struct {
	Engine       *Engine
	Auth         Authenticator
	AllowedUsers sets.Set[string]
	// NodeAgents may pause and resume, from a pod on Node.
	NodeAgents sets.Set[string]
	Node       string
	Metrics    *Metrics
}

// Handler returns the API's HTTP handler.
func (c *Control) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !c.Engine.Ready() {
			http.Error(w, "not live", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	mux.Handle("GET /position", c.authorized(manager, func(ctx context.Context, _ Call) (Position, error) {
		return c.Engine.PositionWithLag(ctx)
	}))
	mux.Handle("POST /caught-up", c.authorized(manager, func(ctx context.Context, _ Call) (Position, error) {
		return c.Engine.CaughtUp(ctx)
	}))
	mux.Handle("POST /pause", c.authorized(nodeAgent, func(ctx context.Context, _ Call) (Position, error) {
		defer c.Metrics.observe(pauseSeconds, time.Now())
		return c.Engine.Pause(ctx)
	}))
	mux.Handle("POST /resume", c.authorized(nodeAgent, func(context.Context, Call) (Position, error) {
		return c.Engine.Resume()
	}))
	mux.Handle("POST /rejoin", c.authorized(manager, func(context.Context, Call) (Position, error) {
		return c.Engine.Rejoin(), nil
	}))
	mux.Handle("POST /fence", c.authorized(manager, func(ctx context.Context, _ Call) (Position, error) {
		defer c.Metrics.observe(fenceSeconds, time.Now())
		return c.Engine.Fence(ctx)
	}))
	mux.Handle("POST /handover", c.authorized(manager, func(ctx context.Context, call Call) (Position, error) {
		if len(call.Fence) == 0 {
			return Position{}, badRequest("fence: required")
		}
		return c.Engine.Handover(ctx, call.Fence)
	}))
	mux.Handle("POST /abort", c.authorized(manager, func(context.Context, Call) (Position, error) {
		return c.Engine.Abort(), nil
	}))
	mux.Handle("POST /replay", c.authorized(manager, func(_ context.Context, call Call) (Position, error) {
		return c.Engine.Replay(call.From, call.Fence)
	}))
	return mux
}

type badRequest string

func (b badRequest) Error() string { return string(b) }

// unavailable is a call that could not be answered for now (Kafka
// unreachable): 503, and the caller asks again.
type unavailable struct{ error }

func (u unavailable) Unwrap() error { return u.error }

// caller is who may make a control call: the manager only, or also the
// node agent on the sidecar's node.
type caller int

const (
	manager caller = iota
	nodeAgent
)

// allows says why id may not make a call open to who ("" when it may).
func (c *Control) allows(who caller, id Identity) string {
	switch {
	case c.AllowedUsers.Has(id.User):
		return ""
	case !c.NodeAgents.Has(id.User):
		return fmt.Sprintf("%s may not control this sidecar", id.User)
	case who != nodeAgent:
		return fmt.Sprintf("%s, a node agent, may only pause and resume this sidecar", id.User)
	case c.Node == "" || id.Node != c.Node:
		return fmt.Sprintf("%s may pause and resume only sidecars on its own node: its token is bound to a pod on node %q, this sidecar runs on %q", id.User, id.Node, c.Node)
	}
	return ""
}

func (c *Control) authorized(who caller, call func(context.Context, Call) (Position, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || token == "" {
			http.Error(w, "bearer token required", http.StatusUnauthorized)
			return
		}
		id, err := c.Auth.Authenticate(r.Context(), token)
		if err != nil {
			http.Error(w, "unauthenticated: "+err.Error(), http.StatusUnauthorized)
			return
		}
		if why := c.allows(who, id); why != "" {
			http.Error(w, why, http.StatusForbidden)
			return
		}
		req, err := DecodeRequest(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// The call may take up to its timeout, longer than the server's
		// read and write timeouts: its connection's deadlines move past it
		// (a read deadline passing meanwhile would cancel r's context).
		deadline := time.Now().Add(req.Timeout + callSlack)
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(deadline)
		_ = rc.SetWriteDeadline(deadline)
		ctx, cancel := context.WithTimeout(r.Context(), req.Timeout)
		defer cancel()
		pos, err := call(ctx, req)
		switch {
		case errors.As(err, new(badRequest)):
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		case errors.Is(err, context.DeadlineExceeded):
			http.Error(w, err.Error(), http.StatusGatewayTimeout)
			return
		case errors.As(err, new(unavailable)):
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(pos)
	})
}
