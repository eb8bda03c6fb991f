package replay

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ms2m/ms2m/internal/expect"
)

// recorder is an app that records, per partition, the offsets it applied
// live and those it applied as replay.
type recorder struct {
	mu      sync.Mutex
	applied applied
}

func newRecorder() *recorder {
	return &recorder{applied: newApplied()}
}

func (r *recorder) ServeHTTP(_ http.ResponseWriter, req *http.Request) {
	p, _ := strconv.Atoi(req.Header.Get(HeaderPartition))
	off, _ := strconv.ParseInt(req.Header.Get(HeaderOffset), 10, 64)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applied.add(p, off, req.Header.Get(HeaderReplay) == "true")
}

func (r *recorder) snapshot() applied {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applied.clone()
}

// TestHandoverAtFenceHasNoGapAndNoDuplicate is the mechanism of a migration
// with two sidecars on a two-partition topic under a steady producer: the
// source is paused to record O, resumed, the target replays from O, the
// source is fenced at F, the target hands over at F. Live processing across
// both must cover every offset exactly once, split at F; the target must
// have replayed exactly [O, F).
func TestHandoverAtFenceHasNoGapAndNoDuplicate(t *testing.T) {
	b := startBroker(t, 2)
	sources := b.sources("handover")

	// A steady producer, in small batches, until told to stop.
	var produced atomic.Int64
	stopProducing := make(chan struct{})
	producerDone := make(chan struct{})
	var stopOnce sync.Once
	stop := func() { stopOnce.Do(func() { close(stopProducing) }); <-producerDone }
	t.Cleanup(stop) // also when the test fails half-way
	go func() {
		defer close(producerDone)
		w := &kafka.Writer{Addr: kafka.TCP(b.addr), Topic: topic, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll}
		defer func() { _ = w.Close() }()
		for i := 0; ; i++ {
			select {
			case <-stopProducing:
				return
			default:
			}
			batch := []kafka.Message{{Value: []byte(strconv.Itoa(2 * i))}, {Value: []byte(strconv.Itoa(2*i + 1))}}
			if err := w.WriteMessages(context.Background(), batch...); err != nil {
				t.Errorf("producing: %v", err)
				return
			}
			produced.Add(2)
		}
	}()

	sourceApp, targetApp := newRecorder(), newRecorder()
	source := NewLive(sources, deliverer(t, sourceApp))
	runEngine(t, source)
	waitDelivered(t, source, 100)

	// Checkpointing: pause, record O, resume.
	ctx, cancel := context.WithTimeout(context.Background(), 2*expect.Timeout)
	defer cancel()
	if _, err := source.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	o, err := sources.Committed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustResume(t, source)

	// Restoring + replaying: the target replays from O while the source serves.
	target := NewReplay(sources, deliverer(t, targetApp), o)
	runEngine(t, target)
	if target.Ready() {
		t.Fatal("a replaying target must not be ready")
	}
	expect.Eventually(t, "target replaying", func() error {
		if n := target.Position().Replayed; n < 50 {
			return fmt.Errorf("%d replayed", n)
		}
		return nil
	})

	// The lag the controller samples is the distance to the source's
	// committed position, never negative, and shrinks to 0 once the source
	// stops.
	if pos, err := target.PositionWithLag(ctx); err != nil || pos.Lag < 0 {
		t.Fatalf("lag = %d (%v)", pos.Lag, err)
	}

	// Finalizing: fence the source, hand over at F.
	fenced, err := source.Fence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	again, err := source.Fence(ctx)
	if err != nil || !maps.Equal(again.Fence, fenced.Fence) {
		t.Fatalf("fencing twice gave %v (%v), then %v", fenced.Fence, err, again.Fence)
	}
	if source.Ready() {
		t.Fatal("a fenced source must not be ready")
	}
	expect.Eventually(t, "lag to the fence drains", func() error {
		// Before the handover the target replays up to the source's
		// committed offsets, which are now the fence.
		pos, err := target.PositionWithLag(ctx)
		if err != nil {
			return err
		}
		if pos.Lag != 0 {
			return fmt.Errorf("lag %d", pos.Lag)
		}
		return nil
	})
	live, err := target.Handover(ctx, fenced.Fence)
	if err != nil {
		t.Fatal(err)
	}
	if live.Mode != ModeLive || !target.Ready() {
		t.Fatalf("target after handover: %+v", live)
	}
	// It says where it went live: exactly at the fence, reported again by
	// every later position (the controller records it from either).
	if !maps.Equal(live.LiveFrom, fenced.Fence) || !maps.Equal(target.Position().LiveFrom, fenced.Fence) {
		t.Fatalf("target live from %v (later %v); the fence was %v", live.LiveFrom, target.Position().LiveFrom, fenced.Fence)
	}

	// More traffic after the handover, then drain.
	expect.Eventually(t, "traffic after handover", func() error {
		if n := target.Position().Delivered - target.Position().Replayed; n < 100 {
			return fmt.Errorf("%d live on the target", n)
		}
		return nil
	})
	stop()
	total := produced.Load()

	expect.Eventually(t, "every message processed live exactly once", func() error {
		srcLive := sourceApp.snapshot().live
		tgt := targetApp.snapshot()
		end, err := b.endOffsets(ctx)
		if err != nil {
			return err
		}
		var n int64
		for p, e := range end {
			n += e
			all := append(append([]int64(nil), srcLive[p]...), tgt.live[p]...)
			if !equal(all, seq(0, e)) {
				return fmt.Errorf("partition %d: live processing is not 0..%d exactly once: source %d msgs, target %d msgs",
					p, e-1, len(srcLive[p]), len(tgt.live[p]))
			}
			f := fenced.Fence[p]
			if len(srcLive[p]) > 0 && srcLive[p][len(srcLive[p])-1] >= f {
				return fmt.Errorf("partition %d: source processed live past the fence %d", p, f)
			}
			if !equal(tgt.replay[p], seq(o[p], f)) {
				return fmt.Errorf("partition %d: target replayed %v, want exactly [%d, %d)", p, tgt.replay[p], o[p], f)
			}
		}
		if n != total {
			return fmt.Errorf("%d messages in the topic, %d produced", n, total)
		}
		return nil
	})
	t.Logf("O=%v F=%v, %d messages, %d replayed", o, fenced.Fence, total, target.Position().Replayed)
}

func (b *broker) endOffsets(ctx context.Context) (map[int]int64, error) {
	c := &kafka.Client{Addr: kafka.TCP(b.addr), Timeout: 5 * time.Second}
	resp, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		topic: {kafka.LastOffsetOf(0), kafka.LastOffsetOf(1)},
	}})
	if err != nil {
		return nil, err
	}
	out := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		out[p.Partition] = p.LastOffset
	}
	return out, nil
}

// An abort settles a handover whose answer the controller lost: a target
// still replaying to the fence never goes live afterwards (its pending
// Handover fails, the group's offsets stay at F for the source to resume
// from); a live engine says so and stays live.
func TestAbortSettlesALostHandover(t *testing.T) {
	h, _ := liveAfter(t, 40)
	ctx, f := fencedAfter(t, h)

	slow := newApp()
	slow.holdAt = 10 // the target is still replaying when the abort comes
	target := NewReplay(h.b.sources(h.group), deliverer(t, slow), map[int]int64{0: 0})
	runEngine(t, target)
	<-slow.held
	handover := make(chan error, 1)
	go func() { _, err := target.Handover(ctx, f.Fence); handover <- err }()
	expect.Eventually(t, "handover asked", func() error {
		if target.Position().Fence == nil {
			return fmt.Errorf("no fence yet")
		}
		return nil
	})
	if pos := target.Abort(); pos.Mode != ModeAborted {
		t.Fatalf("abort of a replaying target answered %s; want aborted", pos.Mode)
	}
	close(slow.release)
	if err := <-handover; err == nil || !strings.Contains(err.Error(), "aborted") {
		t.Fatalf("pending handover returned %v; want it to fail as aborted", err)
	}
	if _, err := target.Handover(ctx, f.Fence); err == nil {
		t.Fatal("an aborted target accepted a new handover")
	}
	if pos := target.Position(); pos.Mode != ModeAborted || target.Ready() || h.b.committed(t, h.group) != 40 {
		t.Fatalf("after the abort: mode %s, ready %v, committed %d; want aborted, unready, 40", pos.Mode, target.Ready(), h.b.committed(t, h.group))
	}

	h.engine.Rejoin() // the rollback: the source rejoins at F
	if pos := h.engine.Abort(); pos.Mode != ModeLive {
		t.Fatalf("abort of a live engine answered %s; want live", pos.Mode)
	}
	h.b.produce(t, 40, 5)
	expect.Eventually(t, "the resumed source consumes on", func() error {
		if got := h.b.committed(t, h.group); got != 45 {
			return fmt.Errorf("committed %d", got)
		}
		return nil
	})
}

// A controller that did not record a handover (its status write lost)
// finds the target live and fences the source again: the source answers
// the same F, although the target has committed past it since.
func TestAFenceAskedAgainAfterTheHandoverAnswersTheSameF(t *testing.T) {
	b := startBroker(t, 2)
	for _, static := range []bool{true, false} {
		group := fmt.Sprintf("refence-%t", static)
		sources := b.sources(group)
		if static {
			sources.InstanceID = "orders-0"
		}
		source := NewLive(sources, deliverer(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
		runEngine(t, source)
		b.produce(t, 0, 20)
		waitDelivered(t, source, 20)
		ctx, cancel := context.WithTimeout(context.Background(), expect.Timeout)
		defer cancel()
		first, err := source.Fence(ctx)
		if err != nil {
			t.Fatal(err)
		}
		target := NewReplay(sources, deliverer(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})), first.Fence)
		runEngine(t, target)
		if _, err := target.Handover(ctx, first.Fence); err != nil {
			t.Fatal(err)
		}
		b.produce(t, 20, 10)
		expect.Eventually(t, "the target committed past F", func() error {
			committed, err := sources.Committed(ctx)
			if err != nil {
				return err
			}
			if total(committed) <= total(first.Fence) {
				return fmt.Errorf("committed %v, F %v", committed, first.Fence)
			}
			return nil
		})
		again, err := source.Fence(ctx)
		if err != nil || !maps.Equal(again.Fence, first.Fence) {
			t.Fatalf("static %t: fenced again: F %v (%v); want the first answer %v", static, again.Fence, err, first.Fence)
		}
	}
}
