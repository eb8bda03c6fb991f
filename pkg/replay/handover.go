package replay

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"
)

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
		e.liveFrom = maps.Clone(e.next)
		e.liveAt = time.Now()
		e.atFenceAt = e.liveAt
		e.setModeLocked(ModeLive)
		live := e.prepared
		if live == nil {
			live = e.sources.Live()
		}
		e.prepared = nil
		if a, ok := live.(activator); ok {
			a.Activate()
		}
		e.replaceSourceLocked(live)
		return
	}
	if e.src != nil {
		e.replaceSourceLocked(nil) // replayed to the fence: nothing more to read
	}
}

// Fence stops live consumption after the in-flight message and leaves the
// group. It returns the fence F: the group's committed offsets, which equal
// what the app acknowledged. Fencing twice returns the same F, also once the
// target, live, has committed past it (a controller that did not record the
// handover asks again); only a sidecar restarted fenced reads F anew.
func (e *Engine) Fence(ctx context.Context) (Position, error) {
	pos, err := e.fenceOnce(ctx)
	if err == nil && pos.Fence != nil {
		e.mu.Lock()
		if e.mode == ModeFenced && e.fenceAnswer == nil {
			e.fenceAnswer = &Position{Fence: maps.Clone(pos.Fence), Assigned: slices.Clone(pos.Assigned)}
		}
		e.mu.Unlock()
	}
	return pos, err
}

func (e *Engine) fenceOnce(ctx context.Context) (Position, error) {
	stop := context.AfterFunc(ctx, e.wake)
	defer stop()
	e.mu.Lock()
	if e.mode == ModeFenced && e.fenceAnswer != nil {
		pos := e.positionLocked()
		pos.Fence, pos.Assigned = maps.Clone(e.fenceAnswer.Fence), slices.Clone(e.fenceAnswer.Assigned)
		e.mu.Unlock()
		return pos, nil
	}
	if e.mode == ModeReplay || e.mode == ModeStandby || e.mode == ModeAborted {
		mode := e.mode
		e.mu.Unlock()
		return Position{}, fmt.Errorf("a %s sidecar cannot be fenced; fence the live source", mode)
	}
	// No new message starts while the fence waits for the in-flight one:
	// under steady load the delivery loop would otherwise take the next
	// message every time the lock is free, and the fence would wait for the
	// backlog to drain.
	wasPaused := e.paused
	if e.mode == ModeLive {
		// A source paused for its checkpoint and fenced there (StopAndCopy)
		// splits its stall here: the pause up to the fence, the handover
		// from it.
		e.fencedAt = time.Now()
	}
	e.paused = true
	e.interruptLocked()
	err := e.waitIdleLocked(ctx)
	e.paused = wasPaused
	if err != nil {
		e.cond.Broadcast()
		e.mu.Unlock()
		return Position{}, err
	}
	if e.mode == ModeLive && !wasPaused {
		// As a pause's: the stall starts when the last delivery before
		// the fence ended.
		e.fencedAt = time.Now()
	}
	var assigned []int
	if a, ok := e.src.(assigner); ok {
		assigned = a.Assigned()
	}
	fromLive := e.mode == ModeLive
	if fromLive {
		e.setModeLocked(ModeFenced)
		e.replaceSourceLocked(nil) // the target can take the partitions (a static member's place stays for it)
	}
	pos := e.positionLocked()
	pos.Assigned = assigned
	e.mu.Unlock()

	// F as a pause's O: a static member fenced from live that delivered
	// from each of its partitions answers from what it acknowledged,
	// without asking the broker (a round trip less inside the handover's
	// stall); otherwise from the group's committed offsets, which must
	// equal what it acknowledged.
	var committed map[int]int64
	if !fromLive || !coversAssigned(assigned, pos.Next) {
		var err error
		if committed, err = e.sources.Committed(ctx); err != nil {
			return Position{}, unavailable{fmt.Errorf("reading the fence from the group's committed offsets: %w", err)}
		}
		for p, off := range pos.Next {
			if committed[p] != off {
				return Position{}, fmt.Errorf("partition %d: committed offset %d differs from the acknowledged position %d", p, committed[p], off)
			}
		}
	}
	pos.Fence = memberOffsets(pos, committed)
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
		e.fenceCommittedLocked()
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
	e.fenceCommittedLocked()
	e.settleAtFenceLocked()
	return nil
}

// committedRaiser is Sources that can be told committed offsets it has
// not polled yet (see Kafka.committedAtLeast): the fence, or offsets just
// read for the lag; and asked to follow them closely for a while (d > 0)
// or no longer (d = 0).
type committedRaiser interface {
	committedAtLeast(map[int]int64)
	followCommitted(d time.Duration)
}

// fenceCommittedLocked tells the replay source that the group has
// committed the fence: F is the fenced source's committed offsets, so the
// replay need not wait for its next poll of them to read up to F (that
// wait was on the handover's stall).
func (e *Engine) fenceCommittedLocked() {
	if r, ok := e.sources.(committedRaiser); ok && e.fence != nil {
		r.committedAtLeast(e.fence)
		r.followCommitted(0)
	}
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
	case e.mode == ModeAborted:
		return Position{}, fmt.Errorf("the migration was aborted on this target: it never goes live")
	case e.mode == ModeReplay:
		if err := e.boundLocked(fence); err != nil {
			return Position{}, err
		}
		if e.handoverAt.IsZero() {
			e.handoverAt = time.Now()
			for p, f := range fence {
				e.handoverBehind += max(f-e.next[p], 0)
			}
		}
		e.handover = true
		e.paused = false
		if p, ok := e.sources.(preparer); ok && e.prepared == nil {
			// The group member joins (in the source's place: the source
			// was fenced, its commits are final at F) while the replay
			// runs the rest of the way to F; it reads nothing before then.
			if live := p.PrepareLive(); live != nil {
				e.prepared = live
			}
		}
		e.settleAtFenceLocked()
		e.cond.Broadcast()
	case e.fence != nil && !maps.Equal(e.fence, fence):
		return Position{}, fmt.Errorf("handover already started at fence %v", e.fence)
	case e.fence == nil:
		return Position{}, fmt.Errorf("handover needs a replaying target; this engine is %s", e.mode)
	}
	for e.mode != ModeLive && e.mode != ModeAborted && ctx.Err() == nil {
		e.cond.Wait()
	}
	if e.mode == ModeAborted {
		return Position{}, fmt.Errorf("aborted before the fence (at %v, fence %v): this target never goes live", e.next, e.fence)
	}
	if e.mode != ModeLive {
		return Position{}, fmt.Errorf("not at the fence before the deadline (at %v, fence %v): %w", e.next, e.fence, ctx.Err())
	}
	if err := e.waitJoinedLocked(ctx); err != nil {
		return Position{}, err
	}
	return e.positionLocked(), nil
}

// preparer is Sources that can open the live source of a handover before
// the replay reaches the fence (Kafka.PrepareLive; nil when it cannot).
type preparer interface{ PrepareLive() Source }

// activator is a prepared live source: it joins at once and reads from
// Activate on.
type activator interface{ Activate() }

// joiner is a live source that joins its group before it reads (the
// static member): live means joined.
type joiner interface {
	// Joined closes once the member has joined and reads its partitions;
	// JoinedAt is when.
	Joined() <-chan struct{}
	JoinedAt() time.Time
}

// waitJoinedLocked waits, on a target that went live, until its group
// member has joined, and moves LiveAt to then: the handover's stall lasts
// until the target can read from the fence, not until it decided to.
func (e *Engine) waitJoinedLocked(ctx context.Context) error {
	j, ok := e.src.(joiner)
	if !ok {
		return nil
	}
	e.mu.Unlock()
	select {
	case <-j.Joined():
	case <-ctx.Done():
	}
	e.mu.Lock()
	if ctx.Err() != nil {
		return fmt.Errorf("live at the fence %v, but its group member did not join before the deadline: %w", e.fence, ctx.Err())
	}
	if t := j.JoinedAt(); t.After(e.liveAt) {
		e.liveAt = t
	}
	return nil
}

// Abort settles a target's part in a migration being rolled back, so that
// the source can resume without a second live consumer: a target not yet
// live stops reading and can no longer go live (a handover asked of it,
// perhaps answered too late for the controller to hear, is dropped); one
// already live stays live and says so. The answer's Mode is the truth the
// controller acts on: aborted, or live (then the handover happened).
func (e *Engine) Abort() Position {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mode == ModeReplay || e.mode == ModeStandby {
		e.handover = false
		e.setModeLocked(ModeAborted)
		e.dropPreparedLocked()
		e.replaceSourceLocked(nil)
	}
	return e.positionLocked()
}
