package replay

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"

	"github.com/segmentio/kafka-go"
)

// Fetcher is the part of a kafka-go group reader the engine uses.
type Fetcher interface {
	FetchMessage(ctx context.Context) (kafka.Message, error)
	CommitMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Position is where live consumption stands.
type Position struct {
	// Next is, per partition, the next offset to deliver: every offset below
	// it was acknowledged by the app and committed for the group.
	Next      map[int]int64
	Delivered int64
	Paused    bool
}

// Engine consumes live as a member of the consumer group: fetch, deliver,
// commit, one message at a time, so that per partition the app's state is
// exact up to Position.Next.
type Engine struct {
	Source  Fetcher
	Deliver *Deliverer

	mu        sync.Mutex
	cond      *sync.Cond
	paused    bool
	inFlight  bool
	next      map[int]int64
	delivered int64
}

// NewEngine returns an engine reading from source and delivering with d.
func NewEngine(source Fetcher, d *Deliverer) *Engine {
	e := &Engine{Source: source, Deliver: d, next: map[int]int64{}}
	e.cond = sync.NewCond(&e.mu)
	return e
}

// Run consumes until ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, e.wake)
	defer stop()
	for {
		m, err := e.Source.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("fetching from Kafka: %w", err)
		}
		// A message fetched while paused waits, undelivered, for resume.
		if err := e.begin(ctx); err != nil {
			return nil
		}
		err = e.process(ctx, m)
		e.end(m, err == nil)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

func (e *Engine) process(ctx context.Context, m kafka.Message) error {
	if err := e.Deliver.Deliver(ctx, m, false); err != nil {
		return err
	}
	// Commit only what the app acknowledged: the committed offset never
	// runs ahead of the app's state.
	if err := e.Source.CommitMessages(ctx, m); err != nil {
		return fmt.Errorf("committing %s/%d@%d: %w", m.Topic, m.Partition, m.Offset, err)
	}
	return nil
}

func (e *Engine) begin(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for e.paused && ctx.Err() == nil {
		e.cond.Wait()
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	e.inFlight = true
	return nil
}

func (e *Engine) end(m kafka.Message, acked bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.inFlight = false
	if acked {
		e.next[m.Partition] = m.Offset + 1
		e.delivered++
	}
	e.cond.Broadcast()
}

func (e *Engine) wake() {
	e.mu.Lock()
	e.cond.Broadcast()
	e.mu.Unlock()
}

// Pause lets the in-flight message finish, stops delivering and reports the
// position. Pausing a paused engine reports the same position.
func (e *Engine) Pause(ctx context.Context) (Position, error) {
	stop := context.AfterFunc(ctx, e.wake)
	defer stop()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.paused = true
	for e.inFlight && ctx.Err() == nil {
		e.cond.Wait()
	}
	if e.inFlight {
		return Position{}, errors.Join(errors.New("in-flight message not acknowledged before the deadline"), ctx.Err())
	}
	return e.positionLocked(), nil
}

// Resume continues delivery. Resuming a running engine does nothing.
func (e *Engine) Resume() Position {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.paused = false
	e.cond.Broadcast()
	return e.positionLocked()
}

// Position reports where consumption stands.
func (e *Engine) Position() Position {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.positionLocked()
}

func (e *Engine) positionLocked() Position {
	return Position{Next: maps.Clone(e.next), Delivered: e.delivered, Paused: e.paused}
}
