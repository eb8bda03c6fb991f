package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/ms2m/ms2m/internal/expect"
)

// staticAuth accepts one token as one user; the token check is tested
// against a real apiserver in control_test.go and token_test.go.
type staticAuth struct{ token, user string }

func (a staticAuth) Authenticate(_ context.Context, token string) (Identity, error) {
	if token != a.token {
		return Identity{}, errors.New("unknown token")
	}
	return Identity{User: a.user}, nil
}

// controlServer serves e's control API, allowing the bearer token "manager".
func controlServer(t testing.TB, e *Engine) func(method, path, body string) (int, string) {
	t.Helper()
	ctl := &Control{Engine: e, Auth: staticAuth{token: "manager", user: DefaultAllowedUser}, AllowedUsers: sets.New(DefaultAllowedUser)}
	srv := httptest.NewServer(ctl.Handler())
	t.Cleanup(srv.Close)
	return controlClient{t: t, srv: srv, token: "manager"}.call
}

// controlClient calls the control API served by srv, presenting token as a
// bearer token (none when empty).
type controlClient struct {
	t     testing.TB
	srv   *httptest.Server
	token string
}

// call returns the response's status and body.
func (c controlClient) call(method, path, body string) (int, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.srv.URL+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.srv.Client().Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestReplayCallReplaysFromOffsetsToTheFenceThenHandsOver drives a standby
// sidecar through the control API: POST /replay from O up to the source's
// fence F replays exactly [O, F), marked as replay, in batches, and stops
// there although the topic goes on; repeating the call changes nothing and
// a different one is refused; the handover at F then consumes live from F.
func TestReplayCallReplaysFromOffsetsToTheFenceThenHandsOver(t *testing.T) {
	b := startBroker(t, 1)
	sources := b.sources("replay-call")
	// The source processes 0..49 live and is fenced at 50; 50..59 arrive
	// after the fence.
	srcApp := newApp()
	source := NewLive(sources, deliverer(t, srcApp))
	runEngine(t, source)
	b.produce(t, 0, 50)
	expectExactly(t, srcApp, 50)
	ctx, cancel := context.WithTimeout(context.Background(), expect.Timeout)
	defer cancel()
	fenced, err := source.Fence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b.produce(t, 50, 10)

	tgtApp := newBatchApp()
	d := deliverer(t, tgtApp)
	d.BatchSize = 4
	target := NewStandby(sources, d)
	runEngine(t, target)
	call := controlServer(t, target)
	if target.Ready() {
		t.Fatal("a standby sidecar must not be ready")
	}
	if status, body := call("POST", "/fence", ""); status != http.StatusConflict || !strings.Contains(body, "standby") {
		t.Fatalf("fencing a standby sidecar = %d %q; want 409", status, body)
	}

	req := `{"from":{"0":10},"fence":{"0":50}}`
	status, body := call("POST", "/replay", req)
	var pos Position
	if status != 200 || json.Unmarshal([]byte(body), &pos) != nil || pos.Mode != ModeReplay || pos.From[0] != 10 || pos.Fence[0] != 50 {
		t.Fatalf("POST /replay = %d %s; want replaying from 10 up to 50", status, body)
	}
	for _, tc := range []struct {
		name, body string
		status     int
		contains   string
	}{
		{"same call again", req, 200, `"from":{"0":10}`},
		{"same origin, no fence", `{"from":{"0":10}}`, 200, `"fence":{"0":50}`},
		{"another origin", `{"from":{"0":11}}`, 409, "already replaying from"},
		{"another fence", `{"from":{"0":10},"fence":{"0":51}}`, 409, "already bounded"},
		{"fence on another partition", `{"from":{"0":10},"fence":{"1":50}}`, 400, "fence: partition 1 is not in from"},
		{"fence before from", `{"from":{"0":10},"fence":{"0":9}}`, 400, "fence[0]"},
		{"no from", `{"fence":{"0":50}}`, 400, "from: required"},
		{"partition not a number", `{"from":{"zero":10}}`, 400, "from: partition"},
		{"negative offset", `{"from":{"0":-1}}`, 400, "from[0]"},
	} {
		if status, body := call("POST", "/replay", tc.body); status != tc.status || !strings.Contains(body, tc.contains) {
			t.Errorf("%s: POST /replay %s = %d %q; want %d containing %q", tc.name, tc.body, status, body, tc.status, tc.contains)
		}
	}

	expect.Eventually(t, "replayed to the fence", func() error {
		status, body := call("GET", "/position", "")
		var pos Position
		if status != 200 || json.Unmarshal([]byte(body), &pos) != nil {
			return fmt.Errorf("GET /position = %d %s", status, body)
		}
		if pos.Next[0] != 50 || pos.Lag != 0 || pos.Replayed != 40 {
			return fmt.Errorf("position %s", body)
		}
		return nil
	})
	if target.Ready() {
		t.Fatal("a target that replayed to a fence is not live: it must not be ready")
	}

	// Handover at the same fence: live from F.
	if _, err := target.Handover(ctx, fenced.Fence); err != nil {
		t.Fatal(err)
	}
	expect.Eventually(t, "replay exactly [10, 50) marked, then live exactly [50, 60)", func() error {
		seen := tgtApp.snapshot()
		live, replay, batches := seen.live, seen.replay, seen.batches
		if len(seen.problems) > 0 {
			return fmt.Errorf("app saw: %v", seen.problems)
		}
		if !equal(replay[0], seq(10, 50)) {
			return fmt.Errorf("replayed %v", replay[0])
		}
		if !equal(live[0], seq(50, 60)) {
			return fmt.Errorf("live %v", live[0])
		}
		for _, bt := range batches {
			if len(bt.Messages) > 4 {
				return fmt.Errorf("a batch of %d, the app asked for at most 4", len(bt.Messages))
			}
		}
		return nil
	})
	if status, body := call("POST", "/replay", req); status != http.StatusConflict || !strings.Contains(body, "live sidecar cannot replay") {
		t.Errorf("POST /replay on a live sidecar = %d %q; want 409", status, body)
	}
}

// TestReplayCallIsIdempotentOnATargetStartedFromTheEnvironment: the
// controller starts targets with MS2M_REPLAY_FROM; the same offsets through
// POST /replay change nothing, so either path may be retried.
func TestReplayCallIsIdempotentOnATargetStartedFromTheEnvironment(t *testing.T) {
	b := startBroker(t, 1)
	sources := b.sources("replay-env")
	target := NewReplay(sources, deliverer(t, newRecorder()), map[int]int64{0: 3})
	runEngine(t, target)
	call := controlServer(t, target)
	before := target.Position()
	if status, body := call("POST", "/replay", `{"from":{"0":3}}`); status != 200 || !strings.Contains(body, `"mode":"replay"`) {
		t.Fatalf("POST /replay with the environment's offsets = %d %q; want 200", status, body)
	}
	if after := target.Position(); !maps.Equal(after.From, before.From) || after.Fence != nil {
		t.Fatalf("position changed: %+v -> %+v", before, after)
	}
	if status, body := call("POST", "/replay", `{"from":{"0":4}}`); status != http.StatusConflict {
		t.Fatalf("POST /replay with other offsets = %d %q; want 409", status, body)
	}
}
