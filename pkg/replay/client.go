package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Client calls a sidecar's control API: what the migration controller uses.
type Client struct {
	// HTTP defaults to a client with a 60 s timeout.
	HTTP *http.Client
	// Token returns the bearer token to present to the sidecar that
	// accepts audience (the manager's service account's, for that
	// audience only: see ControlAudience).
	Token func(ctx context.Context, audience string) (string, error)
}

// Endpoint is one sidecar's control API: where it listens and the audience
// of the tokens it accepts.
type Endpoint struct {
	Addr     string
	Audience string
}

// EndpointOf is the control endpoint of the sidecar in the pod with this
// IP, namespace and UID.
func EndpointOf(podIP string, port int32, namespace, uid string) Endpoint {
	return Endpoint{Addr: net.JoinHostPort(podIP, strconv.Itoa(int(port))), Audience: ControlAudience(namespace, uid)}
}

func (e Endpoint) String() string { return e.Addr }

// Position asks where the sidecar stands, with the replay lag.
func (c *Client) Position(ctx context.Context, ep Endpoint) (Position, error) {
	return c.call(ctx, http.MethodGet, ep, "/position", nil)
}

// CaughtUp asks a replaying target to answer once it has replayed
// everything the live member committed, or at timeout (whole seconds, at
// least 1); the answer's Lag says which.
func (c *Client) CaughtUp(ctx context.Context, ep Endpoint, timeout time.Duration) (Position, error) {
	return c.call(ctx, http.MethodPost, ep, "/caught-up", &Request{TimeoutSeconds: max(1, int(timeout.Seconds()))})
}

// Pause stops delivery after the in-flight message.
func (c *Client) Pause(ctx context.Context, ep Endpoint) (Position, error) {
	return c.call(ctx, http.MethodPost, ep, "/pause", nil)
}

// Resume ends a pause; a fenced sidecar refuses it (409).
func (c *Client) Resume(ctx context.Context, ep Endpoint) (Position, error) {
	return c.call(ctx, http.MethodPost, ep, "/resume", nil)
}

// Rejoin is a migration's rollback: it ends a pause or a fence, and the
// source consumes live again.
func (c *Client) Rejoin(ctx context.Context, ep Endpoint) (Position, error) {
	return c.call(ctx, http.MethodPost, ep, "/rejoin", nil)
}

// Fence stops live consumption and reports F.
func (c *Client) Fence(ctx context.Context, ep Endpoint) (Position, error) {
	return c.call(ctx, http.MethodPost, ep, "/fence", nil)
}

// Handover replays to exactly fence, then goes live.
func (c *Client) Handover(ctx context.Context, ep Endpoint, fence map[int]int64) (Position, error) {
	req := Request{Fence: wireOffsets(fence)}
	if dl, ok := ctx.Deadline(); ok {
		req.TimeoutSeconds = max(1, int(time.Until(dl).Seconds()))
	}
	return c.call(ctx, http.MethodPost, ep, "/handover", &req)
}

// Abort makes a target that is not live never go live, and reports its
// mode: aborted, or live when the handover already happened.
func (c *Client) Abort(ctx context.Context, ep Endpoint) (Position, error) {
	return c.call(ctx, http.MethodPost, ep, "/abort", nil)
}

// Replay makes a standby sidecar replay from the given offsets, up to fence
// when it is not nil. It returns once the replay started.
func (c *Client) Replay(ctx context.Context, ep Endpoint, from, fence map[int]int64) (Position, error) {
	return c.call(ctx, http.MethodPost, ep, "/replay", &Request{From: wireOffsets(from), Fence: wireOffsets(fence)})
}

func wireOffsets(in map[int]int64) map[string]int64 {
	if in == nil {
		return nil
	}
	out := make(map[string]int64, len(in))
	for p, o := range in {
		out[strconv.Itoa(p)] = o
	}
	return out
}

// CallError is a sidecar's refusal, with its HTTP status.
type CallError struct {
	Status  int
	Message string
}

func (e *CallError) Error() string {
	return fmt.Sprintf("sidecar answered %d: %s", e.Status, e.Message)
}

func (c *Client) call(ctx context.Context, method string, ep Endpoint, path string, body *Request) (Position, error) {
	var pos Position
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return pos, err
		}
		rd = bytes.NewReader(b)
	}
	addr := ep.Addr
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, rd)
	if err != nil {
		return pos, err
	}
	if c.Token != nil {
		tok, err := c.Token(ctx, ep.Audience)
		if err != nil {
			return pos, fmt.Errorf("token for the sidecar: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: time.Minute}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return pos, fmt.Errorf("sidecar %s %s: %w", addr, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return pos, &CallError{Status: resp.StatusCode, Message: strings.TrimSpace(string(msg))}
	}
	// A sidecar is in a tenant's pod: what it answers is bounded before it
	// is decoded (into the controller's memory and the migration's status).
	answer, err := io.ReadAll(io.LimitReader(resp.Body, MaxPositionBytes+1))
	if err != nil {
		return pos, fmt.Errorf("sidecar %s %s: %w", addr, path, err)
	}
	if len(answer) > MaxPositionBytes {
		return pos, fmt.Errorf("sidecar %s %s: answer larger than %d bytes: refused", addr, path, MaxPositionBytes)
	}
	if err := json.Unmarshal(answer, &pos); err != nil {
		return pos, fmt.Errorf("sidecar %s %s: %w", addr, path, err)
	}
	if n := len(pos.Next) + len(pos.From) + len(pos.Fence) + len(pos.LiveFrom) + len(pos.Assigned); n > MaxPositionPartitions {
		return Position{}, fmt.Errorf("sidecar %s %s: answer names %d partitions: refused (at most %d)", addr, path, n, MaxPositionPartitions)
	}
	return pos, nil
}

// Bounds on a sidecar's answer: a Position of a consumer with thousands of
// partitions is a few hundred KiB.
const (
	MaxPositionBytes      = 1 << 20
	MaxPositionPartitions = 4 * 10000
)
