package replay

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"

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
	// Fence is set on a replaying target once the handover began.
	Fence map[int]int64 `json:"fence,omitempty"`
	// Lag, on a replaying target, is the number of messages between its
	// position and the live member's committed position (or the fence).
	Lag int64 `json:"lag"`
}

// Engine delivers messages one at a time, so that per partition the app's
// state is exact up to Position.Next.
type Engine struct {
	sources Sources
	deliver *Deliverer
	// Metrics, when set, count deliveries.
	Metrics *Metrics

	mu        sync.Mutex
	cond      *sync.Cond
	mode      Mode
	paused    bool
	inFlight  bool
	src       Source
	gen       int // bumped whenever src is replaced or closed
	next      map[int]int64
	fence     map[int]int64
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
	e.src = s.Replay(from)
	return e
}

func newEngine(s Sources, d *Deliverer, m Mode) *Engine {
	e := &Engine{sources: s, deliver: d, mode: m, next: map[int]int64{}}
	e.cond = sync.NewCond(&e.mu)
	return e
}

// Run delivers until ctx ends, then closes the current source.
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	e.Metrics.setMode(e.mode)
	e.mu.Unlock()
	stop := context.AfterFunc(ctx, e.wake)
	defer stop()
	defer e.closeSource()
	for {
		src, gen, ok := e.current(ctx)
		if !ok {
			return nil
		}
		m, err := src.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if e.stale(gen) {
				continue // closed by a fence or a handover
			}
			return fmt.Errorf("fetching from Kafka: %w", err)
		}
		replayed, deliver := e.begin(ctx, m, gen)
		if ctx.Err() != nil {
			return nil
		}
		if !deliver {
			continue
		}
		err = e.process(ctx, src, m, replayed)
		e.end(m, replayed, err == nil)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

func (e *Engine) process(ctx context.Context, src Source, m kafka.Message, replayed bool) error {
	if err := e.deliver.Deliver(ctx, m, replayed); err != nil {
		return err
	}
	if replayed {
		return nil
	}
	// Commit only what the app acknowledged: the committed offset never
	// runs ahead of the app's state, so it is the fence when live stops.
	if err := src.CommitMessages(ctx, m); err != nil {
		return fmt.Errorf("committing %s/%d@%d: %w", m.Topic, m.Partition, m.Offset, err)
	}
	return nil
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

// begin decides whether m is delivered now. It waits while paused. It
// returns deliver=false for a message to drop: one from a replaced source
// (the new source reads it again) or, replaying, one at or beyond the fence
// (the target reads it live). The replay source itself holds back what the
// live member has not processed yet (see Sources.Replay).
func (e *Engine) begin(ctx context.Context, m kafka.Message, gen int) (replayed, deliver bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for e.paused && gen == e.gen && ctx.Err() == nil {
		e.cond.Wait()
	}
	if ctx.Err() != nil || gen != e.gen {
		return false, false
	}
	replayed = e.mode == ModeReplay
	if replayed && e.fence != nil {
		if f, ok := e.fence[m.Partition]; !ok || m.Offset >= f {
			return true, false
		}
	}
	e.inFlight = true
	return replayed, true
}

func (e *Engine) end(m kafka.Message, replayed, acked bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.inFlight = false
	if acked {
		e.next[m.Partition] = m.Offset + 1
		e.delivered++
		if replayed {
			e.replayed++
		}
		if e.Metrics != nil {
			e.Metrics.Delivered.Inc()
			if replayed {
				e.Metrics.Replayed.Inc()
			}
		}
		e.goLiveAtFenceLocked()
	}
	e.cond.Broadcast()
}

// goLiveAtFenceLocked switches a replaying target to live consumption once
// it has replayed every partition to exactly the fence. The group's
// committed offsets are the fence, so live consumption starts there.
func (e *Engine) goLiveAtFenceLocked() {
	if e.mode != ModeReplay || e.fence == nil {
		return
	}
	for p, f := range e.fence {
		if e.next[p] < f {
			return
		}
	}
	e.setModeLocked(ModeLive)
	e.replaceSourceLocked(e.sources.Live())
}

func (e *Engine) setModeLocked(m Mode) {
	e.mode = m
	e.Metrics.setMode(m)
}

// replaceSourceLocked closes the current source and installs next (nil for
// none); a fetch from the old one is recognised as stale by its generation.
func (e *Engine) replaceSourceLocked(next Source) {
	if e.src != nil {
		_ = e.src.Close()
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

// waitIdleLocked waits for the in-flight message to be acknowledged.
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
	if e.mode == ModeReplay {
		e.mu.Unlock()
		return Position{}, errors.New("a replaying target cannot be fenced; fence the live source")
	}
	if err := e.waitIdleLocked(ctx); err != nil {
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

// Handover makes a replaying target replay to exactly the fence F, then
// consume live from F as a group member. It returns once the target is live.
// Calling it again with the same fence waits for the same outcome.
func (e *Engine) Handover(ctx context.Context, fence map[int]int64) (Position, error) {
	stop := context.AfterFunc(ctx, e.wake)
	defer stop()
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.mode == ModeReplay && e.fence == nil:
		for p, f := range fence {
			if e.next[p] > f {
				return Position{}, fmt.Errorf("partition %d: replay is at %d, past the fence %d", p, e.next[p], f)
			}
		}
		e.fence = maps.Clone(fence)
		e.paused = false
		e.goLiveAtFenceLocked()
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
		Paused: e.paused, Fence: maps.Clone(e.fence)}
}
