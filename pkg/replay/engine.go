package replay

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
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
	// Read reads one partition from an offset, outside the group and
	// without waiting for commits: a rewind for an app that lost state.
	Read(partition int, from int64) Source
	// DeadLetter writes a message the app refused for good to the
	// dead-letter topic, with why.
	DeadLetter(ctx context.Context, m kafka.Message, cause error) error
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
	// ModeAborted is a target whose migration is being rolled back (POST
	// /abort) before it went live: it reads nothing and never goes live.
	ModeAborted Mode = "aborted"
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
	// DeadLettered counts messages the app refused for good (see
	// PoisonError): written to the dead-letter topic, or, replaying,
	// passed over.
	DeadLettered int64 `json:"deadLettered,omitempty"`
	// From is, on a replaying target, the offsets the replay started from.
	From map[int]int64 `json:"from,omitempty"`
	// Fence bounds a replay: set by the handover (the target then goes live
	// at it) or by a replay call with a fence (the target stops there).
	Fence map[int]int64 `json:"fence,omitempty"`
	// Lag, on a replaying target, is the number of messages between its
	// position and the live member's committed position (or the fence).
	Lag int64 `json:"lag"`
	// LiveFrom is, on a target that was handed over, the next offset of
	// each partition at the moment it went live: where its replay ended and
	// its live consumption began. Equal to the fence when nothing was
	// skipped or processed twice at the handover.
	LiveFrom map[int]int64 `json:"liveFrom,omitempty"`
	// Assigned is, for a static member of a group (MS2M_GROUP_INSTANCE_ID),
	// the partitions the group gave it: with several replicas in one group,
	// a migration checkpoints, replays and fences exactly these. Absent
	// when not known (a dynamic member, or none joined yet).
	Assigned []int `json:"assigned,omitempty"`

	// Checkpoint is, on a paused sidecar (the answer to a pause), O: per
	// partition the member consumes (Assigned; every partition of the
	// topic for a dynamic member), the offset the app's memory is exact
	// to: Next, or for a partition not delivered from since the sidecar
	// started, the group's committed offset, read while paused.
	Checkpoint map[int]int64 `json:"checkpoint,omitempty"`

	// The stalls, by this sidecar's clock: when its last delivery before
	// a pause (PausedAt) or a fence (FencedAt) ended (from then it starts
	// none; the message in flight when the call came is not held up), when a
	// pause, or a fence rolled back, ended (ResumedAt), and, on a
	// handed-over target, when it was live (LiveAt: at the fence and, as
	// a group member, joined and reading from it). A message arriving between a stop and its end waits for
	// it; the message in flight at the stop is not held up. Absent when
	// not (yet) known, e.g. on a sidecar restarted since.
	PausedAt  *time.Time `json:"pausedAt,omitempty"`
	ResumedAt *time.Time `json:"resumedAt,omitempty"`
	FencedAt  *time.Time `json:"fencedAt,omitempty"`
	LiveAt    *time.Time `json:"liveAt,omitempty"`

	// PauseSteps, in the answer to a pause, say where its time went.
	PauseSteps *PauseSteps `json:"pauseSteps,omitempty"`
	// HandoverSteps, on a target live after a handover, say where the
	// target's part of the handover's stall went.
	HandoverSteps *HandoverSteps `json:"handoverSteps,omitempty"`
}

// HandoverSteps time a target's part of a handover: from the handover call
// to the fence it replayed Behind messages (those the source processed
// after the target's last replayed one) in Replay, then its group member
// joined in Join.
type HandoverSteps struct {
	Behind int64         `json:"behind"`
	Replay time.Duration `json:"replay"`
	Join   time.Duration `json:"join"`
}

// PauseSteps time a pause's parts: waiting for the delivery in flight
// (and its commit) to end, reading the group's committed offsets (zero
// when not needed), and quiescing the app's connections.
type PauseSteps struct {
	Idle    time.Duration `json:"idle"`
	Offsets time.Duration `json:"offsets"`
	Quiesce time.Duration `json:"quiesce"`
}

// memberOffsets are, per partition the member consumes (pos.Assigned; all
// for a dynamic member), the offset its app's state is exact to: pos.Next,
// or for a partition not delivered from since it started, the group's
// committed offset. A paused member's O (Position.Checkpoint), a fenced
// one's F.
func memberOffsets(pos Position, committed map[int]int64) map[int]int64 {
	o := maps.Clone(committed)
	if o == nil {
		o = map[int]int64{}
	}
	maps.Copy(o, pos.Next)
	if pos.Assigned != nil {
		// One replica of several: its partitions, not the others'.
		maps.DeleteFunc(o, func(p int, _ int64) bool { return !slices.Contains(pos.Assigned, p) })
	}
	return o
}

// coversAssigned: the member knows its partitions (static) and delivered
// from each since it started, so Next is O for all of them.
// Live, each offset in Next was committed before the next delivery began.
func coversAssigned(assigned []int, next map[int]int64) bool {
	if len(assigned) == 0 {
		return false
	}
	for _, p := range assigned {
		if _, ok := next[p]; !ok {
			return false
		}
	}
	return true
}

// at is t for a Position's time fields: nil for the zero time.
func at(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// assigner is a live source that knows its partitions (static).
type assigner interface{ Assigned() []int }

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
	// OnPoison is called for each message the app refused for good, once
	// it was dead-lettered (deadLettered) or, replaying, passed over (the
	// live member dead-lettered it already).
	OnPoison func(p *PoisonError, deadLettered bool)
	// OnQuiesceError is called when the app did not confirm, at a pause,
	// that it closed its connections for the checkpoint (see QuiescePath).
	OnQuiesceError func(error)
	// OnRewind is called when the app asked for a rewind (it restarted
	// from a checkpoint image) and was given [from, to) of partition p.
	OnRewind func(p int, from, to int64, delivered int)

	mu        sync.Mutex
	cond      *sync.Cond
	mode      Mode
	paused    bool
	inFlight  bool
	interrupt chan struct{} // the in-flight step's stop (see interruptLocked)
	src       Source
	gen       int // bumped whenever src is replaced or closed
	next      map[int]int64
	prev      map[int]int64 // per partition, the offset the app acknowledged last
	from      map[int]int64
	fence     map[int]int64
	handover  bool // go live at the fence (else stop there)
	// prepared is the live source a handover opened while the replay
	// still runs to the fence: its group member joins meanwhile, and the
	// engine reads from it once at the fence.
	prepared Source
	// liveFrom is where a handed-over target went live: its position at
	// the moment the replay reached the fence.
	liveFrom map[int]int64
	// fenceAnswer is the fence F this engine answered (and the partitions
	// it held then) since it was fenced: a fence asked again answers it,
	// whatever the group has committed since (the target, live, commits
	// past F).
	fenceAnswer *Position
	// Of a handover: when it was asked, how far behind the fence the
	// target was then, and when the replay reached the fence.
	handoverAt, atFenceAt time.Time
	handoverBehind        int64
	// See Position: when deliveries stopped and started again.
	pausedAt, resumedAt, fencedAt, liveAt time.Time
	closing                               sync.WaitGroup
	delivered                             int64
	replayed                              int64
	poisoned                              int64
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

// NewFenced returns an engine that stays out of the group, as a fenced
// one does, until Resume: a migration's source whose sidecar restarted
// after the fence. Fence answers the group's committed offsets again.
func NewFenced(s Sources, d *Deliverer) *Engine {
	return newEngine(s, d, ModeFenced)
}

// NewStandby returns an engine that consumes nothing until Replay.
func NewStandby(s Sources, d *Deliverer) *Engine {
	return newEngine(s, d, ModeStandby)
}

func newEngine(s Sources, d *Deliverer, m Mode) *Engine {
	e := &Engine{sources: s, deliver: d, mode: m, next: map[int]int64{}, prev: map[int]int64{}}
	e.cond = sync.NewCond(&e.mu)
	return e
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
	e.interruptLocked()
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
	e.dropPreparedLocked()
	e.replaceSourceLocked(nil)
}

// dropPreparedLocked closes a live source prepared for a handover that
// will not happen.
func (e *Engine) dropPreparedLocked() {
	if p := e.prepared; p != nil {
		e.prepared = nil
		e.closing.Go(func() { _ = p.Close() })
	}
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
// position. Pausing a paused engine reports the same position. The app's
// container is checkpointed next, so the sidecar closes its connections to
// the app and asks the app to close its own (see QuiescePath).
func (e *Engine) Pause(ctx context.Context) (Position, error) {
	start := time.Now()
	pos, err := e.pause(ctx)
	if err != nil {
		return Position{}, err
	}
	steps := &PauseSteps{Idle: time.Since(start)}
	start = time.Now()
	// O: where this member delivered from, Next is what it committed
	// (Next moves after the commit, and nothing is in flight); only the
	// partitions it has not delivered from since it started need the
	// group's committed offsets, read while paused, when they cannot move.
	// A static member that delivered from each of its partitions answers
	// without asking the broker: a round trip less inside the pause.
	var committed map[int]int64
	if pos.Mode != ModeLive || !coversAssigned(pos.Assigned, pos.Next) {
		var err error
		if committed, err = e.sources.Committed(ctx); err != nil {
			return Position{}, unavailable{fmt.Errorf("paused, but reading the group's committed offsets for the checkpoint failed: %w", err)}
		}
	}
	pos.Checkpoint = memberOffsets(pos, committed)
	steps.Offsets, start = time.Since(start), time.Now()
	if err := e.deliver.Quiesce(ctx); err != nil && e.OnQuiesceError != nil {
		e.OnQuiesceError(err)
	}
	steps.Quiesce = time.Since(start)
	pos.PauseSteps = steps
	return pos, nil
}

func (e *Engine) pause(ctx context.Context) (Position, error) {
	stop := context.AfterFunc(ctx, e.wake)
	defer stop()
	e.mu.Lock()
	defer e.mu.Unlock()
	started := !e.paused
	if started {
		e.pausedAt, e.resumedAt = time.Now(), time.Time{}
	}
	e.paused = true
	e.interruptLocked()
	if err := e.waitIdleLocked(ctx); err != nil {
		return Position{}, err
	}
	if started {
		// The stall starts when the last delivery before it ended: the
		// message in flight at the pause was not held up, and one arriving
		// meanwhile would have waited for it anyway.
		e.pausedAt = time.Now()
	}
	return e.positionLocked(), nil
}

// ErrFenced is a resume of a fenced engine: only the migration's rollback
// (Rejoin) ends a fence.
var ErrFenced = errors.New("fenced for a handover: a resume ends a pause only; the migration's rollback (POST /rejoin, the manager's) ends a fence")

// Resume ends a pause (the node agent's, after a checkpoint). It never
// ends a fence: a resume that arrives late, after the controller fenced
// the source (an agent's retry, or a second checkpoint from a stale
// cache), would otherwise put the source back in the group beside its
// target. Resuming a running engine does nothing.
func (e *Engine) Resume() (Position, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mode == ModeFenced {
		return Position{}, ErrFenced
	}
	e.resumeLocked()
	return e.positionLocked(), nil
}

// Rejoin is the rollback of a migration: it ends a pause and a fence; a
// fenced engine rejoins the group and consumes live again. Rejoining a
// running engine does nothing.
func (e *Engine) Rejoin() Position {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mode == ModeFenced {
		e.resumedAt = time.Now()
		e.fenceAnswer = nil
		e.setModeLocked(ModeLive)
		e.replaceSourceLocked(e.sources.Live())
	}
	e.resumeLocked()
	return e.positionLocked()
}

func (e *Engine) resumeLocked() {
	if e.paused {
		e.resumedAt = time.Now()
	}
	e.paused = false
	e.cond.Broadcast()
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
			return pos, unavailable{fmt.Errorf("reading the group's committed offsets: %w", err)}
		}
		limit = committed
		// What was just read also releases the replay up to it, without
		// waiting for the replay's own poll of the committed offsets (every
		// MaxWait/5): a target asked to catch up (CaughtUp reads every
		// caughtUpPoll) follows the live member that closely, so it is
		// seen caught up, and what it still replays after the fence is
		// what the source processed in between.
		if r, ok := e.sources.(committedRaiser); ok {
			r.committedAtLeast(committed)
		}
	}
	for p, next := range pos.Next {
		pos.Lag += max(limit[p]-next, 0)
	}
	if e.Metrics != nil {
		e.Metrics.Lag.Set(float64(pos.Lag))
	}
	return pos, nil
}

// caughtUpPoll is how often CaughtUp asks the group's committed offsets,
// and how often the replay does for followAfterCaughtUp after it.
const caughtUpPoll = 2 * time.Millisecond

// followAfterCaughtUp is how long a target keeps following the live
// member's commits at caughtUpPoll after a CaughtUp call: long enough for
// the controller's fence, which waits for the source's message in flight,
// and short, as each poll is an OffsetFetch (and a Metadata) to the broker.
const followAfterCaughtUp = time.Second

// CaughtUp waits, on a replaying target, until it has replayed everything
// the live member committed (Lag 0), or ctx ends; it answers the position
// with the lag either way (the lag is what it last saw). The controller
// fences the source right after it: what the target still replays after
// the fence, on the handover's stall, is then what the source processed in
// between, not a sample's worth.
func (e *Engine) CaughtUp(ctx context.Context) (Position, error) {
	// Whatever the answer, the fence comes next (or another look): until
	// then the replay follows the live member closely on its own.
	defer func() {
		if r, ok := e.sources.(committedRaiser); ok && e.Position().Fence == nil {
			r.followCommitted(followAfterCaughtUp)
		}
	}()
	var last *Position
	for {
		pos, err := e.PositionWithLag(ctx)
		switch {
		case err != nil && ctx.Err() != nil && last != nil:
			return *last, nil // the deadline cut the last look short
		case err != nil || pos.Mode != ModeReplay || pos.Lag == 0:
			return pos, err
		}
		last = &pos
		t := time.NewTimer(caughtUpPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return pos, nil
		case <-t.C:
		}
	}
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
	pos := Position{Mode: e.mode, Next: maps.Clone(e.next), Delivered: e.delivered, Replayed: e.replayed,
		Paused: e.paused, DeadLettered: e.poisoned, From: maps.Clone(e.from), Fence: maps.Clone(e.fence), LiveFrom: maps.Clone(e.liveFrom),
		PausedAt: at(e.pausedAt), ResumedAt: at(e.resumedAt), FencedAt: at(e.fencedAt), LiveAt: at(e.liveAt)}
	if a, ok := e.src.(assigner); ok {
		pos.Assigned = a.Assigned()
	}
	if e.mode == ModeLive && !e.handoverAt.IsZero() && !e.atFenceAt.IsZero() {
		pos.HandoverSteps = &HandoverSteps{Behind: e.handoverBehind, Replay: max(e.atFenceAt.Sub(e.handoverAt), 0), Join: e.liveAt.Sub(e.atFenceAt)}
	}
	return pos
}
