package replay

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// Source is a stream of messages: a group reader (live) or standalone
// partition readers (replay).
type Source interface {
	FetchMessage(ctx context.Context) (kafka.Message, error)
	CommitMessages(ctx context.Context, msgs ...kafka.Message) error
	Close() error
}

// Sources opens the engine's streams and reads the group's committed
// offsets. Kafka implements it against a broker.
type Sources interface {
	// Live joins the consumer group; consumption starts at the committed
	// offsets.
	Live() Source
	// Replay reads the given partitions from the given offsets without
	// joining the group, so the live member is undisturbed. It yields a
	// message only once the group has committed past it, so a target never
	// replays what the live member has not processed.
	Replay(from map[int]int64) Source
	// Committed returns the group's committed next offset per partition.
	Committed(ctx context.Context) (map[int]int64, error)
}

// Mode is what the engine is doing.
type Mode string

const (
	// ModeLive consumes as a group member and commits after each ack.
	ModeLive Mode = "live"
	// ModeReplay replays from recorded offsets, marking messages as replayed,
	// never past the live member's committed position or the fence.
	ModeReplay Mode = "replay"
	// ModeFenced has stopped live consumption and left the group: the
	// committed offsets are the fence.
	ModeFenced Mode = "fenced"
	// ModeStandby consumes nothing until told where to replay from (POST
	// /replay): a target pod created before its checkpoint offsets are known.
	ModeStandby Mode = "standby"
)

// Position is where the engine stands.
type Position struct {
	Mode Mode `json:"mode"`
	// Next is, per partition, the next offset to deliver: every offset below
	// it was acknowledged by the app (and, live, committed for the group).
	Next      map[int]int64 `json:"next"`
	Delivered int64         `json:"delivered"`
	Replayed  int64         `json:"replayed"`
	Paused    bool          `json:"paused"`
	// From is, on a replaying target, the offsets the replay started from.
	From map[int]int64 `json:"from,omitempty"`
	// Fence bounds a replay: set by the handover (the target then goes live
	// at it) or by a replay call with a fence (the target stops there).
	Fence map[int]int64 `json:"fence,omitempty"`
	// Lag, on a replaying target, is the number of messages between its
	// position and the live member's committed position (or the fence).
	Lag int64 `json:"lag"`
}

// Engine delivers messages in order, one at a time or, when the app opted
// in, one batch at a time, so that per partition the app's state is exact up
// to Position.Next.
type Engine struct {
	sources Sources
	deliver *Deliverer
	// Metrics, when set, count deliveries.
	Metrics *Metrics
	// BatchLinger is how long the engine waits for more messages to fill a
	// batch once it has one (default 1 ms); it matters only when the app
	// opted in to batches.
	BatchLinger time.Duration
	// OnKafkaError is called for each failed fetch or commit; both are
	// retried (a broker restart is survived in place).
	OnKafkaError func(error)

	mu        sync.Mutex
	cond      *sync.Cond
	mode      Mode
	paused    bool
	inFlight  bool
	src       Source
	gen       int // bumped whenever src is replaced or closed
	next      map[int]int64
	from      map[int]int64
	fence     map[int]int64
	handover  bool // go live at the fence (else stop there)
	closing   sync.WaitGroup
	delivered int64
	replayed  int64
}

// NewLive returns an engine that consumes live as a group member.
func NewLive(s Sources, d *Deliverer) *Engine {
	e := newEngine(s, d, ModeLive)
	e.src = s.Live()
	return e
}

// NewReplay returns an engine for a migration target: it replays from the
// checkpoint offsets and goes live only at Handover.
func NewReplay(s Sources, d *Deliverer, from map[int]int64) *Engine {
	e := newEngine(s, d, ModeReplay)
	e.next = maps.Clone(from)
	e.from = maps.Clone(from)
	e.src = s.Replay(from)
	return e
}

// NewStandby returns an engine that consumes nothing until Replay.
func NewStandby(s Sources, d *Deliverer) *Engine {
	return newEngine(s, d, ModeStandby)
}

func newEngine(s Sources, d *Deliverer, m Mode) *Engine {
	e := &Engine{sources: s, deliver: d, mode: m, next: map[int]int64{}}
	e.cond = sync.NewCond(&e.mu)
	return e
}

// step is one unit of work: the messages to deliver, and (live) those to
// commit, which include fetched messages the app already acknowledged.
type step struct {
	deliver, commit []kafka.Message
	replayed        bool
}

// Run delivers until ctx ends, then closes the current source. Kafka errors
// are retried with backoff: the sidecar rides out a broker restart.
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	e.Metrics.setMode(e.mode)
	e.mu.Unlock()
	stop := context.AfterFunc(ctx, e.wake)
	defer stop()
	defer e.closing.Wait() // leave the group before the process exits
	defer e.closeSource()
	var backoff time.Duration
	for {
		src, gen, ok := e.current(ctx)
		if !ok {
			return nil
		}
		batch, err := e.fetch(ctx, src)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if e.stale(gen) {
				continue // closed by a fence or a handover
			}
			e.kafkaError(fmt.Errorf("fetching from Kafka: %w", err))
			backoff = nextBackoff(backoff)
			if !sleepCtx(ctx, backoff) {
				return nil
			}
			continue
		}
		backoff = 0
		st, ok := e.begin(ctx, batch, gen)
		if ctx.Err() != nil {
			return nil
		}
		if !ok {
			continue
		}
		err = e.process(ctx, src, st)
		e.end(st, err == nil)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

func nextBackoff(d time.Duration) time.Duration {
	return min(max(2*d, 10*time.Millisecond), 2*time.Second)
}

func (e *Engine) kafkaError(err error) {
	if e.Metrics != nil {
		e.Metrics.KafkaErrors.Inc()
	}
	if e.OnKafkaError != nil {
		e.OnKafkaError(err)
	}
}

// fetch waits for a message, then, when the app takes batches, adds what
// arrives within BatchLinger up to the batch size (and MaxBatchBytes).
func (e *Engine) fetch(ctx context.Context, src Source) ([]kafka.Message, error) {
	m, err := src.FetchMessage(ctx)
	if err != nil {
		return nil, err
	}
	n := e.deliver.batchSize()
	if n == 1 {
		return []kafka.Message{m}, nil
	}
	batch := make([]kafka.Message, 1, n)
	batch[0] = m
	linger := e.BatchLinger
	if linger <= 0 {
		linger = time.Millisecond
	}
	lctx, cancel := context.WithTimeout(ctx, linger)
	defer cancel()
	size := len(m.Key) + len(m.Value)
	for len(batch) < n && size < MaxBatchBytes {
		m, err := src.FetchMessage(lctx)
		if err != nil {
			if lctx.Err() == nil {
				e.kafkaError(fmt.Errorf("fetching from Kafka: %w", err))
			}
			break // deliver what there is; the reader keeps its position
		}
		batch = append(batch, m)
		size += len(m.Key) + len(m.Value)
	}
	return batch, nil
}

func (e *Engine) process(ctx context.Context, src Source, st step) error {
	if len(st.deliver) > 0 {
		if err := e.deliver.deliverAll(ctx, st.deliver, st.replayed); err != nil {
			return err
		}
	}
	if st.replayed || len(st.commit) == 0 {
		return nil
	}
	// Commit only what the app acknowledged: the committed offset never
	// runs ahead of the app's state, so it is the fence when live stops.
	// A failed commit is retried, never given up: the app has the messages,
	// and a later fetch of them is recognised by Next and not delivered
	// again.
	var backoff time.Duration
	for {
		err := src.CommitMessages(ctx, st.commit...)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		last := st.commit[len(st.commit)-1]
		e.kafkaError(fmt.Errorf("committing %s/%d@%d: %w", last.Topic, last.Partition, last.Offset, err))
		backoff = nextBackoff(backoff)
		if !sleepCtx(ctx, backoff) {
			return ctx.Err()
		}
	}
}

// current waits until there is a source to read and the engine is not
// fenced; it returns false when ctx ends.
func (e *Engine) current(ctx context.Context) (Source, int, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for (e.src == nil || e.mode == ModeFenced) && ctx.Err() == nil {
		e.cond.Wait()
	}
	return e.src, e.gen, ctx.Err() == nil
}

func (e *Engine) stale(gen int) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return gen != e.gen
}

// begin decides what of batch is delivered now. It waits while paused. It
// drops a batch from a replaced source (the new source reads it again) and,
// replaying, messages at or beyond the fence (the target reads them live).
// A message below Next was acknowledged already (fetched again after a
// broker restart or a rejoin): it is committed, not delivered again. The
// replay source itself holds back what the live member has not processed
// yet (see Sources.Replay).
func (e *Engine) begin(ctx context.Context, batch []kafka.Message, gen int) (step, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for e.paused && gen == e.gen && ctx.Err() == nil {
		e.cond.Wait()
	}
	if ctx.Err() != nil || gen != e.gen {
		return step{}, false
	}
	st := step{replayed: e.mode == ModeReplay}
	for _, m := range batch {
		if next, ok := e.next[m.Partition]; ok && m.Offset < next {
			st.commit = append(st.commit, m)
			continue
		}
		if st.replayed && e.fence != nil {
			if f, ok := e.fence[m.Partition]; !ok || m.Offset >= f {
				continue
			}
		}
		st.deliver = append(st.deliver, m)
		st.commit = append(st.commit, m)
	}
	if len(st.deliver) == 0 && (st.replayed || len(st.commit) == 0) {
		return step{}, false
	}
	e.inFlight = true
	return st, true
}

func (e *Engine) end(st step, acked bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.inFlight = false
	if acked {
		for _, m := range st.deliver {
			e.next[m.Partition] = m.Offset + 1
		}
		n := int64(len(st.deliver))
		e.delivered += n
		if st.replayed {
			e.replayed += n
		}
		if e.Metrics != nil {
			e.Metrics.Delivered.Add(float64(n))
			if st.replayed {
				e.Metrics.Replayed.Add(float64(n))
			}
		}
		e.settleAtFenceLocked()
	}
	e.cond.Broadcast()
}

// settleAtFenceLocked acts once a replaying target has replayed every
// partition to exactly the fence: after a handover it switches to live
// consumption (the group's committed offsets are the fence, so live
// consumption starts there); after a bounded replay it stops reading.
func (e *Engine) settleAtFenceLocked() {
	if e.mode != ModeReplay || e.fence == nil {
		return
	}
	for p, f := range e.fence {
		if e.next[p] < f {
			return
		}
	}
	if e.handover {
		e.setModeLocked(ModeLive)
		e.replaceSourceLocked(e.sources.Live())
		return
	}
	if e.src != nil {
		e.replaceSourceLocked(nil) // replayed to the fence: nothing more to read
	}
}

func (e *Engine) setModeLocked(m Mode) {
	e.mode = m
	e.Metrics.setMode(m)
}

// replaceSourceLocked installs next (nil for none) and closes the current
// source in the background: a fetch from the old one is recognised as stale
// by its generation, and nothing is committed through it any more, so a
// fence need not wait for the reader to leave the group (up to the fetch's
// MaxWait). Run waits for the closes before it returns.
func (e *Engine) replaceSourceLocked(next Source) {
	if old := e.src; old != nil {
		e.closing.Go(func() { _ = old.Close() })
	}
	e.src = next
	e.gen++
	e.cond.Broadcast()
}

func (e *Engine) wake() {
	e.mu.Lock()
	e.cond.Broadcast()
	e.mu.Unlock()
}

func (e *Engine) closeSource() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.replaceSourceLocked(nil)
}

// waitIdleLocked waits for the in-flight message (or batch) to be
// acknowledged and committed.
func (e *Engine) waitIdleLocked(ctx context.Context) error {
	for e.inFlight && ctx.Err() == nil {
		e.cond.Wait()
	}
	if e.inFlight {
		return errors.Join(errors.New("the in-flight message was not acknowledged before the deadline"), ctx.Err())
	}
	return nil
}

// Pause lets the in-flight message finish, stops delivering and reports the
// position. Pausing a paused engine reports the same position.
func (e *Engine) Pause(ctx context.Context) (Position, error) {
	stop := context.AfterFunc(ctx, e.wake)
	defer stop()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.paused = true
	if err := e.waitIdleLocked(ctx); err != nil {
		return Position{}, err
	}
	return e.positionLocked(), nil
}

// Resume continues delivery; a fenced engine rejoins the group (the rollback
// of a migration). Resuming a running engine does nothing.
func (e *Engine) Resume() Position {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.paused = false
	if e.mode == ModeFenced {
		e.setModeLocked(ModeLive)
		e.replaceSourceLocked(e.sources.Live())
	}
	e.cond.Broadcast()
	return e.positionLocked()
}

// Fence stops live consumption after the in-flight message and leaves the
// group. It returns the fence F: the group's committed offsets, which equal
// what the app acknowledged. Fencing twice returns the same F.
func (e *Engine) Fence(ctx context.Context) (Position, error) {
	stop := context.AfterFunc(ctx, e.wake)
	defer stop()
	e.mu.Lock()
	if e.mode == ModeReplay || e.mode == ModeStandby {
		mode := e.mode
		e.mu.Unlock()
		return Position{}, fmt.Errorf("a %s sidecar cannot be fenced; fence the live source", mode)
	}
	// No new message starts while the fence waits for the in-flight one:
	// under steady load the delivery loop would otherwise take the next
	// message every time the lock is free, and the fence would wait for the
	// backlog to drain.
	wasPaused := e.paused
	e.paused = true
	err := e.waitIdleLocked(ctx)
	e.paused = wasPaused
	if err != nil {
		e.cond.Broadcast()
		e.mu.Unlock()
		return Position{}, err
	}
	if e.mode == ModeLive {
		e.setModeLocked(ModeFenced)
		e.replaceSourceLocked(nil) // leaves the group: the target can take the partitions
	}
	pos := e.positionLocked()
	e.mu.Unlock()

	committed, err := e.sources.Committed(ctx)
	if err != nil {
		return Position{}, fmt.Errorf("reading the fence from the group's committed offsets: %w", err)
	}
	for p, off := range pos.Next {
		if committed[p] != off {
			return Position{}, fmt.Errorf("partition %d: committed offset %d differs from the acknowledged position %d", p, committed[p], off)
		}
	}
	pos.Fence = committed
	return pos, nil
}

// Replay makes a standby engine replay from the given offsets as a
// standalone reader (no group membership), marking every message as
// replayed, never past the group's committed offsets and, when fence is
// given, stopping at it (a handover at the same fence then goes live). It
// returns at once; GET /position follows the progress. Calling it again with
// the same offsets changes nothing, so does adding a fence to a replay that
// has none; an engine started with MS2M_REPLAY_FROM accepts the same call.
func (e *Engine) Replay(from, fence map[int]int64) (Position, error) {
	if len(from) == 0 {
		return Position{}, badRequest("from: required")
	}
	if fence != nil {
		for p, f := range fence {
			o, ok := from[p]
			if !ok {
				return Position{}, badRequest(fmt.Sprintf("fence: partition %d is not in from", p))
			}
			if o > f {
				return Position{}, badRequest(fmt.Sprintf("fence[%d]: %d is before from[%d] %d", p, f, p, o))
			}
		}
		for p := range from {
			if _, ok := fence[p]; !ok {
				return Position{}, badRequest(fmt.Sprintf("fence: partition %d of from has no fence", p))
			}
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch e.mode {
	case ModeStandby:
		e.from, e.next, e.fence = maps.Clone(from), maps.Clone(from), maps.Clone(fence)
		e.setModeLocked(ModeReplay)
		e.replaceSourceLocked(e.sources.Replay(from))
		e.settleAtFenceLocked()
	case ModeReplay:
		if !maps.Equal(e.from, from) {
			return Position{}, fmt.Errorf("already replaying from %v", e.from)
		}
		if fence != nil {
			if err := e.boundLocked(fence); err != nil {
				return Position{}, err
			}
		}
	default:
		return Position{}, fmt.Errorf("a %s sidecar cannot replay: only one started in standby (or with %s) replays", e.mode, EnvReplayFrom)
	}
	return e.positionLocked(), nil
}

// boundLocked sets a replay's fence, or checks it is the one set.
func (e *Engine) boundLocked(fence map[int]int64) error {
	if e.fence != nil {
		if !maps.Equal(e.fence, fence) {
			return fmt.Errorf("the replay is already bounded by the fence %v", e.fence)
		}
		return nil
	}
	for p, f := range fence {
		if e.next[p] > f {
			return fmt.Errorf("partition %d: replay is at %d, past the fence %d", p, e.next[p], f)
		}
	}
	e.fence = maps.Clone(fence)
	e.settleAtFenceLocked()
	return nil
}

// Handover makes a replaying target replay to exactly the fence F, then
// consume live from F as a group member. It returns once the target is live.
// Calling it again with the same fence waits for the same outcome.
func (e *Engine) Handover(ctx context.Context, fence map[int]int64) (Position, error) {
	stop := context.AfterFunc(ctx, e.wake)
	defer stop()
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.mode == ModeReplay:
		if err := e.boundLocked(fence); err != nil {
			return Position{}, err
		}
		e.handover = true
		e.paused = false
		e.settleAtFenceLocked()
		e.cond.Broadcast()
	case e.fence != nil && !maps.Equal(e.fence, fence):
		return Position{}, fmt.Errorf("handover already started at fence %v", e.fence)
	case e.fence == nil:
		return Position{}, fmt.Errorf("handover needs a replaying target; this engine is %s", e.mode)
	}
	for e.mode != ModeLive && ctx.Err() == nil {
		e.cond.Wait()
	}
	if e.mode != ModeLive {
		return Position{}, fmt.Errorf("not at the fence before the deadline (at %v, fence %v): %w", e.next, e.fence, ctx.Err())
	}
	return e.positionLocked(), nil
}

// Position reports where the engine stands.
func (e *Engine) Position() Position {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.positionLocked()
}

// PositionWithLag is Position with Lag filled in from the group's committed
// offsets: what the controller samples to estimate μ and decide the cutoff.
func (e *Engine) PositionWithLag(ctx context.Context) (Position, error) {
	pos := e.Position()
	if pos.Mode != ModeReplay {
		return pos, nil
	}
	limit := pos.Fence
	if limit == nil {
		committed, err := e.sources.Committed(ctx)
		if err != nil {
			return pos, fmt.Errorf("reading the group's committed offsets: %w", err)
		}
		limit = committed
	}
	for p, next := range pos.Next {
		pos.Lag += max(limit[p]-next, 0)
	}
	if e.Metrics != nil {
		e.Metrics.Lag.Set(float64(pos.Lag))
	}
	return pos, nil
}

// Ready reports whether the engine consumes live, unpaused: the pod's
// readiness follows it.
func (e *Engine) Ready() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	// A pause (for a checkpoint) is brief and the pod healthy: it stays
	// ready, so Services and PodDisruptionBudgets do not see it flap.
	return e.mode == ModeLive
}

func (e *Engine) positionLocked() Position {
	return Position{Mode: e.mode, Next: maps.Clone(e.next), Delivered: e.delivered, Replayed: e.replayed,
		Paused: e.paused, From: maps.Clone(e.from), Fence: maps.Clone(e.fence)}
}
