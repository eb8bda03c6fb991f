package replay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

// step is one unit of work: the messages to deliver, and (live) those to
// commit, which include fetched messages the app already acknowledged.
type step struct {
	deliver, commit []kafka.Message
	replayed        bool
	// stop closes when a pause or fence wants the step to end between
	// delivery attempts (see interruptLocked).
	stop chan struct{}
	gen  int
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
	// pending is a step a pause or fence interrupted before the app
	// acknowledged it: delivered again once the engine runs, unless its
	// source was replaced meanwhile (the new one reads it again).
	var pending *step
	for {
		src, gen, ok := e.current(ctx)
		if !ok {
			return nil
		}
		var st step
		if pending != nil {
			st, ok = e.again(ctx, *pending, gen)
			pending = nil
		} else {
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
				if !sleepCtx(ctx, jitter(backoff)) {
					return nil
				}
				continue
			}
			backoff = 0
			st, ok = e.begin(ctx, batch, gen)
		}
		if ctx.Err() != nil {
			return nil
		}
		if !ok {
			continue
		}
		err := e.process(ctx, src, st)
		e.end(st, err == nil)
		if errors.Is(err, errInterrupted) {
			pending = &st
			continue
		}
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
		if err := e.deliverStep(ctx, st); err != nil {
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
	last := st.commit[len(st.commit)-1]
	return e.kafkaRetry(ctx, nil, func() error { return src.CommitMessages(ctx, st.commit...) }, func(err error) error {
		return fmt.Errorf("committing %s/%d@%d: %w", last.Topic, last.Partition, last.Offset, err)
	})
}

// kafkaRetry makes a Kafka call until it succeeds, reporting each failure
// (as what describes it) and backing off in between. It returns ctx's
// error, or errInterrupted when stop (nil: never) closes during a wait.
func (e *Engine) kafkaRetry(ctx context.Context, stop <-chan struct{}, call func() error, what func(error) error) error {
	var backoff time.Duration
	for {
		err := call()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		e.kafkaError(what(err))
		backoff = nextBackoff(backoff)
		if !sleepStop(ctx, stop, jitter(backoff)) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return errInterrupted
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
	if !e.admitLocked(ctx, gen) {
		return step{}, false
	}
	st := step{replayed: e.mode == ModeReplay, gen: gen}
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
	e.startLocked(&st)
	return st, true
}

// again resumes an interrupted step once the engine runs, if its source is
// still the current one.
func (e *Engine) again(ctx context.Context, st step, gen int) (step, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if st.gen != gen || !e.admitLocked(ctx, gen) {
		return step{}, false
	}
	e.startLocked(&st)
	return st, true
}

// admitLocked waits while paused; it reports whether a step of source
// generation gen may start.
func (e *Engine) admitLocked(ctx context.Context, gen int) bool {
	for e.paused && gen == e.gen && ctx.Err() == nil {
		e.cond.Wait()
	}
	return ctx.Err() == nil && gen == e.gen
}

func (e *Engine) startLocked(st *step) {
	e.inFlight = true
	st.stop = make(chan struct{})
	e.interrupt = st.stop
}

// interruptLocked asks the in-flight step to end at its next wait between
// delivery attempts, unacknowledged: a pause or a fence must not wait for
// an app that refuses a message, or is down.
func (e *Engine) interruptLocked() {
	if e.interrupt != nil {
		close(e.interrupt)
		e.interrupt = nil
	}
}

func (e *Engine) end(st step, acked bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.inFlight = false
	if e.interrupt == st.stop {
		e.interrupt = nil
	}
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
