package replay

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ms2m/ms2m/internal/expect"
)

// These tests run the engine against a real Kafka-protocol broker (kfake,
// in process, on loopback) and a real HTTP app.

const topic = "orders"

type broker struct {
	addr string
}

// startBroker starts a broker whose topic has the given number of
// partitions.
func startBroker(t testing.TB, partitions int32) *broker {
	t.Helper()
	_, b := startCluster(t, partitions)
	return b
}

// startCluster is startBroker with more options, and the cluster itself
// for tests that watch or steer its requests.
func startCluster(t testing.TB, partitions int32, opts ...kfake.Opt) (*kfake.Cluster, *broker) {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(partitions, topic)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, &broker{addr: c.ListenAddrs()[0]}
}

// waitDelivered waits until e has delivered at least n messages live.
func waitDelivered(t testing.TB, e *Engine, n int64) {
	t.Helper()
	expect.Eventually(t, fmt.Sprintf("the source delivered %d", n), func() error {
		if d := e.Position().Delivered; d < n {
			return fmt.Errorf("%d delivered", d)
		}
		return nil
	})
}

func (b *broker) produce(t testing.TB, from, n int) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(b.addr), Topic: topic, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll}
	defer func() { _ = w.Close() }()
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: []byte("k"), Value: []byte(strconv.Itoa(from + i)),
			Headers: []kafka.Header{{Key: "seq", Value: []byte(strconv.Itoa(from + i))}}}
	}
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatalf("producing: %v", err)
	}
}

func (b *broker) sources(group string) *Kafka {
	return &Kafka{Brokers: []string{b.addr}, Topic: topic, Group: group, MaxWait: 20 * time.Millisecond}
}

func (b *broker) committed(t *testing.T, group string) int64 {
	t.Helper()
	off, err := b.committedErr(group)
	if err != nil {
		t.Fatalf("fetching committed offsets: %v", err)
	}
	return off
}

// committedErr is the group's committed offset of partition 0.
func (b *broker) committedErr(group string) (int64, error) {
	c := &kafka.Client{Addr: kafka.TCP(b.addr), Timeout: 5 * time.Second}
	resp, err := c.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {0}}})
	if err != nil {
		return 0, err
	}
	return resp.Topics[topic][0].CommittedOffset, nil
}

// app records what it acknowledged. It can fail an offset a number of times
// and hold one offset until released.
type app struct {
	mu       sync.Mutex
	acked    []int64
	failures map[int64]int
	holdAt   int64
	heldOnce atomic.Bool // a duplicate of holdAt is recorded, not held again
	held     chan struct{}
	release  chan struct{}
}

func newApp() *app {
	return &app{failures: map[int64]int{}, holdAt: -1, held: make(chan struct{}), release: make(chan struct{})}
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	off, _ := strconv.ParseInt(r.Header.Get(HeaderOffset), 10, 64)
	if r.Header.Get(HeaderPrefix+"Seq") != strconv.FormatInt(off, 10) || r.Header.Get(HeaderTopic) != topic {
		http.Error(w, "metadata headers missing", http.StatusBadRequest)
		return
	}
	if off == a.holdAt && a.heldOnce.CompareAndSwap(false, true) {
		close(a.held)
		<-a.release
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.failures[off] > 0 {
		a.failures[off]--
		http.Error(w, "not now", http.StatusServiceUnavailable)
		return
	}
	a.acked = append(a.acked, off)
}

func (a *app) ackedCopy() []int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]int64(nil), a.acked...)
}

type harness struct {
	b      *broker
	engine *Engine
	group  string
	errs   int
	errsMu sync.Mutex
}

func start(t testing.TB, a http.Handler, opts ...func(*Deliverer)) *harness {
	t.Helper()
	h := &harness{b: startBroker(t, 1), group: "g-" + t.Name()}
	d := deliverer(t, a)
	d.OnAppError = func(kafka.Message, error) { h.errsMu.Lock(); h.errs++; h.errsMu.Unlock() }
	for _, o := range opts {
		o(d)
	}
	h.engine = NewLive(h.b.sources(h.group), d)
	runEngine(t, h.engine)
	return h
}

// deliverer delivers to app, served on loopback, retrying quickly.
func deliverer(t testing.TB, app http.Handler) *Deliverer {
	srv := httptest.NewServer(app)
	t.Cleanup(srv.Close)
	return &Deliverer{URL: srv.URL, Client: srv.Client(), MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond}
}

// runEngine runs e until the test ends, failing the test if e stops with an
// error.
func runEngine(t testing.TB, e *Engine) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("engine stopped with %v", err)
		}
	})
}

// applied is, per partition, the offsets an app applied live and those it
// applied as replay. The app guards it with its own lock.
type applied struct {
	live, replay map[int][]int64
}

func newApplied() applied {
	return applied{live: map[int][]int64{}, replay: map[int][]int64{}}
}

func (a applied) add(partition int, offset int64, replay bool) {
	if replay {
		a.replay[partition] = append(a.replay[partition], offset)
	} else {
		a.live[partition] = append(a.live[partition], offset)
	}
}

func (a applied) clone() applied {
	c := newApplied()
	for p, v := range a.live {
		c.live[p] = slices.Clone(v)
	}
	for p, v := range a.replay {
		c.replay[p] = slices.Clone(v)
	}
	return c
}

func seq(from, to int64) []int64 {
	var s []int64
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

func equal(a, b []int64) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}

// expectExactly checks the app acknowledged offsets 0..n-1, each once, in order.
func expectExactly(t *testing.T, a *app, n int) {
	t.Helper()
	expect.Eventually(t, "app acknowledged every message", func() error {
		got := a.ackedCopy()
		if len(got) < n {
			return fmt.Errorf("%d of %d acknowledged", len(got), n)
		}
		for i, off := range got {
			if off != int64(i) {
				return fmt.Errorf("acknowledgement %d is offset %d: gap, duplicate or reordering (%v)", i, off, got)
			}
		}
		if len(got) != n {
			return fmt.Errorf("%d acknowledged, want %d", len(got), n)
		}
		return nil
	})
}

func TestLiveDeliveryIsOrderedRetriedAndCommitsOnlyAcked(t *testing.T) {
	a := newApp()
	a.failures[10] = 2
	a.holdAt = 30
	h := start(t, a)
	h.b.produce(t, 0, 50)

	<-a.held
	// The app is still working on offset 30: the group's committed offset
	// must not run ahead of what it acknowledged.
	if got := h.b.committed(t, h.group); got != 30 {
		t.Fatalf("committed offset while the app holds 30 = %d, want 30", got)
	}
	close(a.release)
	expectExactly(t, a, 50)
	expect.Eventually(t, "group committed the head", func() error {
		if got := h.b.committed(t, h.group); got != 50 {
			return fmt.Errorf("committed %d", got)
		}
		return nil
	})
	h.errsMu.Lock()
	defer h.errsMu.Unlock()
	if h.errs != 2 {
		t.Errorf("app errors seen = %d, want 2 (two 503s on offset 10, retried)", h.errs)
	}
}

// liveAfter starts a live engine and its app and returns them once n
// produced messages were applied.
func liveAfter(t *testing.T, n int) (*harness, *app) {
	t.Helper()
	a := newApp()
	h := start(t, a)
	h.b.produce(t, 0, n)
	expectExactly(t, a, n)
	return h, a
}

// fencedAfter fences h's engine and returns F with a context for the
// test's further calls.
func fencedAfter(t *testing.T, h *harness) (context.Context, Position) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*expect.Timeout)
	t.Cleanup(cancel)
	f, err := h.engine.Fence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, f
}

func TestPauseReportsExactPositionAndResumeLosesNothing(t *testing.T) {
	h, a := liveAfter(t, 20)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p1, err := h.engine.Pause(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := h.engine.Pause(ctx) // idempotent
	if err != nil {
		t.Fatal(err)
	}
	if !p1.Paused || p1.Next[0] != 20 || p2.Next[0] != 20 || p1.Delivered != 20 {
		t.Fatalf("pause positions = %+v / %+v; want paused at next offset 20 twice", p1, p2)
	}
	if got := h.b.committed(t, h.group); got != p1.Next[0] {
		t.Fatalf("committed %d but pause reported %d: the checkpoint offsets would be wrong", got, p1.Next[0])
	}

	h.b.produce(t, 20, 20)
	if got := h.engine.Position(); got.Next[0] != 20 {
		t.Fatalf("engine moved while paused: %+v", got)
	}
	mustResume(t, h.engine)
	mustResume(t, h.engine) // idempotent
	expectExactly(t, a, 40)
}

// A fenced source whose sidecar restarts (NewFenced, from MS2M_MODE)
// consumes nothing, answers the fence F again from the group's committed
// offsets, and serves again only when a rollback resumes it.
func TestAFencedSidecarRestartsFenced(t *testing.T) {
	h, a := liveAfter(t, 20)
	ctx, first := fencedAfter(t, h)

	restarted := NewFenced(h.b.sources(h.group), deliverer(t, a))
	runEngine(t, restarted)
	h.b.produce(t, 20, 10)
	again, err := restarted.Fence(ctx)
	if err != nil || again.Mode != ModeFenced || again.Fence[0] != first.Fence[0] || first.Fence[0] != 20 {
		t.Fatalf("fence after the restart %+v (%v); want fenced at %v", again, err, first.Fence)
	}
	if got := h.b.committed(t, h.group); got != 20 || len(a.ackedCopy()) != 20 {
		t.Fatalf("a restarted fenced sidecar consumed: committed %d, app saw %d; want 20 and 20", got, len(a.ackedCopy()))
	}
	restarted.Rejoin()
	expectExactly(t, a, 30)
}

// A resume that arrives after the fence (the node agent's, late: a retry,
// or a second checkpoint run from a stale cache) is refused: the fenced
// source stays out of the group, so its committed offsets stay the F the
// target goes live at, and it delivers nothing more. Before, a resume
// ended a fence too: the source rejoined and committed past F while the
// controller was reading F (a fence answered "committed offset 274 differs
// from the acknowledged position 273"), or beside its live target after
// the handover. The rollback (Rejoin) still ends a fence.
func TestAResumeNeverEndsAFence(t *testing.T) {
	h, a := liveAfter(t, 20)
	_, f := fencedAfter(t, h)
	if _, err := h.engine.Resume(); !errors.Is(err, ErrFenced) {
		t.Fatalf("resume of a fenced engine: %v; want ErrFenced", err)
	}
	if pos := h.engine.Position(); pos.Mode != ModeFenced {
		t.Fatalf("mode %s after a late resume; want fenced", pos.Mode)
	}
	h.b.produce(t, 20, 10)
	if got := h.b.committed(t, h.group); got != f.Fence[0] || len(a.ackedCopy()) != 20 {
		t.Fatalf("after a late resume: committed %d, app saw %d; want F %d and 20", got, len(a.ackedCopy()), f.Fence[0])
	}
	h.engine.Rejoin()
	expectExactly(t, a, 30)
}

// slowApp takes a millisecond per message (its processing time).
type slowApp struct{ *app }

func (s *slowApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	time.Sleep(time.Millisecond) // processing time, not synchronisation
	s.app.ServeHTTP(w, r)
}

// Under a backlog, a fence stops live consumption after the in-flight
// message; it does not wait for the backlog to drain, and F is exactly what
// the app acknowledged.
func TestFenceUnderLoadStopsAfterTheInFlightMessage(t *testing.T) {
	a := &slowApp{newApp()}
	h := start(t, a)
	const n = 3000
	h.b.produce(t, 0, n)
	expect.Eventually(t, "delivery under way", func() error {
		if got := len(a.ackedCopy()); got < 50 {
			return fmt.Errorf("%d acknowledged", got)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pos, err := h.engine.Fence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	acked := a.ackedCopy()
	if f := pos.Fence[0]; f != int64(len(acked)) || f >= n {
		t.Fatalf("fence at %d with %d acknowledged of %d produced: want F = acknowledged, with the backlog left for the target", f, len(acked), n)
	}
	if got := h.b.committed(t, h.group); got != pos.Fence[0] {
		t.Fatalf("committed %d, fence %d", got, pos.Fence[0])
	}
}

// mustResume ends e's pause; e is not fenced.
func mustResume(t testing.TB, e *Engine) Position {
	t.Helper()
	pos, err := e.Resume()
	if err != nil {
		t.Fatal(err)
	}
	return pos
}
