package migrationtest

import (
	"context"
	"errors"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/ms2m/ms2m/pkg/replay"
)

// Sidecars is a FAKE replay sidecar on every pod. Every call succeeds at
// once unless Refuse or Unreachable names it; positions are Next (a Fence
// also answers the group's committed offsets, Next and SetIdle's), and a
// replaying target reports Lag and Replayed as set, and ModeReplay until a
// Handover was answered. It records the calls it answered, by name, in
// order.
type Sidecars struct {
	mu       sync.Mutex
	next     map[int]int64
	lag      int64
	replayed int64
	refuse   map[string]string
	busy     map[string]string
	busied   map[string]int
	down     map[string]bool
	calls    []string
	// live: a handover was answered, so the target reports ModeLive.
	live bool
	// idle: partitions the group has committed offsets for that the
	// sidecar has not delivered from since it started (not in Next).
	idle map[int]int64
	// assigned: a static member's partitions (nil: a dynamic member).
	assigned []int
	// pause, handover: the stalls the sidecars report (see SetStalls).
	pause, handover time.Duration
	stalls          bool
	// pausedNow: paused and not resumed since; fencedPaused: fenced
	// while paused, which ends the pause (StopAndCopy); fenced: fenced and
	// not rejoined since (a Resume is refused then, as the real sidecar
	// refuses it). The FAKE answers for every pod: a Pause starts the
	// next migration's checkpoint, of a source that is not fenced.
	pausedNow, fencedPaused, fenced bool
}

// SetStalls makes the sidecars report, by their own clocks, a checkpoint
// pause (Resume's PausedAt to ResumedAt, or Pause's PausedAt to the
// FencedAt of a fence while paused) and a handover (Fence's FencedAt to
// Handover's LiveAt) of the given lengths. Without it they report no
// times, as a sidecar that restarted in between.
func (s *Sidecars) SetStalls(pause, handover time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pause, s.handover, s.stalls = pause, handover, true
}

// sidecarClock is the FAKE sidecars' clock: far from the controller's, as
// another node's may be; only differences of its times mean anything.
var sidecarClock = time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)

// SetAssigned makes the sidecars static members holding partitions (one
// replica of several in the group): their positions name them, and a
// Fence answers only their committed offsets.
func (s *Sidecars) SetAssigned(partitions []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.assigned = slices.Clone(partitions)
}

// SetIdle adds partitions the source's sidecar has not delivered from since
// it (re)started: they are absent from its Next, and its Fence, the group's
// committed offsets as the real sidecar answers it, still names them.
func (s *Sidecars) SetIdle(committed map[int]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.idle = maps.Clone(committed)
}

// NewSidecars returns fake sidecars positioned at next.
func NewSidecars(next map[int]int64) *Sidecars {
	return &Sidecars{next: maps.Clone(next), refuse: map[string]string{}, busy: map[string]string{}, busied: map[string]int{}, down: map[string]bool{}}
}

// SetReplay sets what a replaying target reports.
func (s *Sidecars) SetReplay(replayed, lag int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replayed, s.lag = replayed, lag
}

// Refuse makes the named call ("Pause", "Fence", "Handover", ...) answer
// with a refusal (a replay.CallError) until Allow.
func (s *Sidecars) Refuse(call, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuse[call] = message
}

// Unavailable makes the named call answered 503 with message (the
// sidecar could not reach Kafka) until Allow.
func (s *Sidecars) Unavailable(call, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy[call] = message
}

// Busied is how many times call was answered 503 (see Unavailable).
func (s *Sidecars) Busied(call string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.busied[call]
}

// Unreachable makes the named call get no answer (a connection error,
// which the controller retries) until Allow.
func (s *Sidecars) Unreachable(call string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down[call] = true
}

// WentLive makes the target live as a Handover would, without anyone
// hearing it (the answer was lost).
func (s *Sidecars) WentLive() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.live = true
}

// Allow undoes Refuse and Unreachable.
func (s *Sidecars) Allow(call string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.refuse, call)
	delete(s.busy, call)
	delete(s.down, call)
}

// Calls returns the calls answered so far, in order.
func (s *Sidecars) Calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

// Count is how many times call was answered.
func (s *Sidecars) Count(call string) int {
	n := 0
	for _, c := range s.Calls() {
		if c == call {
			n++
		}
	}
	return n
}

func (s *Sidecars) answer(call string, mode replay.Mode, paused bool) (replay.Position, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down[call] {
		return replay.Position{}, errors.New("dial tcp: connection refused (FAKE sidecar unreachable)")
	}
	if msg, ok := s.refuse[call]; ok {
		return replay.Position{}, &replay.CallError{Status: 409, Message: msg}
	}
	if msg, ok := s.busy[call]; ok {
		s.busied[call]++
		return replay.Position{}, &replay.CallError{Status: 503, Message: msg}
	}
	if call == "Resume" && s.fenced {
		return replay.Position{}, &replay.CallError{Status: 409, Message: replay.ErrFenced.Error()}
	}
	s.calls = append(s.calls, call)
	if call == "Handover" {
		s.live = true
	}
	if call == "Position" && !s.live {
		mode = replay.ModeReplay
	}
	pos := replay.Position{Mode: mode, Next: maps.Clone(s.next), Paused: paused, Replayed: s.replayed, Lag: s.lag}
	if call == "Pause" {
		// O as a real paused sidecar answers it: Next, the committed
		// offsets of the partitions it has not delivered from, its own
		// partitions only.
		pos.Checkpoint = maps.Clone(s.idle)
		if pos.Checkpoint == nil {
			pos.Checkpoint = map[int]int64{}
		}
		maps.Copy(pos.Checkpoint, s.next)
		if s.assigned != nil {
			maps.DeleteFunc(pos.Checkpoint, func(p int, _ int64) bool { return !slices.Contains(s.assigned, p) })
		}
	}
	if call == "Fence" {
		pos.Fence = maps.Clone(s.next)
		maps.Copy(pos.Fence, s.idle)
		if s.assigned != nil {
			maps.DeleteFunc(pos.Fence, func(p int, _ int64) bool { return !slices.Contains(s.assigned, p) })
		}
	}
	pos.Assigned = slices.Clone(s.assigned)
	switch {
	case call == "Pause":
		s.pausedNow, s.fenced = true, false
	case call == "Resume", call == "Rejoin":
		s.pausedNow, s.fencedPaused, s.fenced = false, false, false
	case call == "Fence":
		s.fenced, s.fencedPaused = true, s.pausedNow
	}
	if s.stalls {
		paused, resumed := sidecarClock, sidecarClock.Add(s.pause)
		fenced := resumed.Add(time.Minute)
		if s.fencedPaused {
			fenced = resumed // fenced where it paused: the pause ends there
		}
		live := fenced.Add(s.handover)
		switch call {
		case "Pause":
			pos.PausedAt = &paused
		case "Resume", "Rejoin":
			pos.PausedAt, pos.ResumedAt = &paused, &resumed
		case "Fence":
			pos.FencedAt = &fenced
		case "Handover":
			pos.LiveAt = &live
			pos.HandoverSteps = &replay.HandoverSteps{Behind: 3, Replay: s.handover / 2, Join: s.handover / 4}
		}
	}
	return pos, nil
}

// Position implements the controller's Sidecars.
func (s *Sidecars) Position(context.Context, replay.Endpoint) (replay.Position, error) {
	return s.answer("Position", replay.ModeLive, false)
}

// CaughtUp implements the controller's Sidecars: the FAKE target catches
// up at once (its lag drops to 0).
func (s *Sidecars) CaughtUp(context.Context, replay.Endpoint, time.Duration) (replay.Position, error) {
	s.mu.Lock()
	s.lag = 0
	s.mu.Unlock()
	return s.answer("CaughtUp", replay.ModeReplay, false)
}

// Pause implements the agent's pause (see AgentReport).
func (s *Sidecars) Pause(context.Context, replay.Endpoint) (replay.Position, error) {
	return s.answer("Pause", replay.ModeLive, true)
}

// Resume implements the agent's resume (see AgentReport): it ends a
// pause and is refused after a fence.
func (s *Sidecars) Resume(context.Context, replay.Endpoint) (replay.Position, error) {
	return s.answer("Resume", replay.ModeLive, false)
}

// Rejoin implements the controller's Sidecars: the rollback, which ends a
// pause or a fence.
func (s *Sidecars) Rejoin(context.Context, replay.Endpoint) (replay.Position, error) {
	return s.answer("Rejoin", replay.ModeLive, false)
}

// Fence implements the controller's Sidecars.
func (s *Sidecars) Fence(context.Context, replay.Endpoint) (replay.Position, error) {
	return s.answer("Fence", replay.ModeFenced, false)
}

// Abort implements the controller's Sidecars: a target handed over says it
// is live, any other stops for good (later Handovers are refused).
func (s *Sidecars) Abort(context.Context, replay.Endpoint) (replay.Position, error) {
	s.mu.Lock()
	live := s.live
	if !live {
		s.refuse["Handover"] = "aborted: this target never goes live (FAKE sidecar)"
	}
	s.mu.Unlock()
	if live {
		return s.answer("Abort", replay.ModeLive, false)
	}
	return s.answer("Abort", replay.ModeAborted, false)
}

// Handover implements the controller's Sidecars: the target goes live
// exactly at the fence, as a real one reports it (LiveFrom).
func (s *Sidecars) Handover(_ context.Context, _ replay.Endpoint, fence map[int]int64) (replay.Position, error) {
	pos, err := s.answer("Handover", replay.ModeLive, false)
	if err == nil {
		pos.LiveFrom = maps.Clone(fence)
	}
	return pos, err
}

// Broker is a FAKE Kafka broker address for the controller's reachability
// check (it only dials the brokers; the offsets come from the fake
// sidecar): a listener that accepts connections and closes them. Close the
// listener to stop it.
func Broker() (net.Listener, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	return l, nil
}
