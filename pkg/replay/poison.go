package replay

import (
	"context"
	"errors"
	"fmt"

	"github.com/segmentio/kafka-go"
)

// deliverStep delivers st's messages in the app's format. A message the app
// refuses for good (a *PoisonError) is written to the dead-letter topic when
// live and then counts as handled, so its partition and the others go on;
// replaying, it is passed over (the live member dead-lettered it already).
// A batch refused for good is delivered again one message at a time, to
// find the message at fault.
func (e *Engine) deliverStep(ctx context.Context, st step) error {
	d := e.deliver
	if d.batchSize() > 1 {
		err := d.deliverBatch(ctx, st.stop, e, st.deliver, st.replayed)
		if err == nil {
			e.acknowledged(st.deliver...)
		}
		if _, ok := errors.AsType[*PoisonError](err); !ok {
			return err
		}
	}
	for _, m := range st.deliver {
		err := d.deliverOne(ctx, st.stop, e, m, st.replayed)
		if err == nil {
			e.acknowledged(m)
		}
		if pe, ok := errors.AsType[*PoisonError](err); ok {
			err = e.deadLetter(ctx, st.stop, st.replayed, pe)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// acknowledged records the app's position (see previous).
func (e *Engine) acknowledged(msgs ...kafka.Message) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, m := range msgs {
		e.prev[m.Partition] = max(e.prev[m.Partition], m.Offset)
	}
}

// previous implements appPosition: the offset the app acknowledged last in
// m's partition; before any, the offset before m (a live member starts at
// the committed offset, a replay at the checkpoint's, where the app is).
// A dead-lettered message is not acknowledged: the app never applied it.
func (e *Engine) previous(m kafka.Message) int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if o, ok := e.prev[m.Partition]; ok {
		return o
	}
	return m.Offset - 1
}

// deadLetter writes a poison message to the dead-letter topic, retrying
// until the broker takes it (a pause or fence interrupts the wait), and
// records it.
func (e *Engine) deadLetter(ctx context.Context, stop <-chan struct{}, replayed bool, pe *PoisonError) error {
	if !replayed {
		m := pe.Message
		err := e.kafkaRetry(ctx, stop, func() error { return e.sources.DeadLetter(ctx, m, pe.Err) }, func(err error) error {
			return fmt.Errorf("dead-lettering %s/%d@%d: %w", m.Topic, m.Partition, m.Offset, err)
		})
		if err != nil {
			return err
		}
	}
	e.mu.Lock()
	e.poisoned++
	e.mu.Unlock()
	if e.Metrics != nil {
		e.Metrics.DeadLettered.Inc()
	}
	if e.OnPoison != nil {
		e.OnPoison(pe, !replayed)
	}
	return nil
}

// rewind gives an app that lost its state the messages of partition p in
// [from, to), marked as replay, and returns how many it delivered. The app
// asks for it with a 409 naming its next offset (HeaderNextOffset): a
// restored container that restarts is created again from its image, the
// checkpoint, and is back at the checkpoint's offsets while the group's
// committed offset is far past them. The offsets below to were processed
// already (by this pod or, before the migration, its source), so their side
// effects are not repeated.
func (e *Engine) rewind(ctx context.Context, stop <-chan struct{}, p int, from, to int64) (bool, error) {
	src := e.sources.Read(p, from)
	defer func() { _ = src.Close() }()
	e.mu.Lock()
	e.prev[p] = from - 1 // where the app says it is
	e.mu.Unlock()
	n, passed := 0, 0
	for next := from; next < to; {
		var m kafka.Message
		err := e.kafkaRetry(ctx, stop, func() (err error) { m, err = src.FetchMessage(ctx); return err }, func(err error) error {
			return fmt.Errorf("rewinding partition %d from %d: %w", p, next, err)
		})
		if err != nil {
			return false, err
		}
		if m.Offset >= to {
			break
		}
		next = m.Offset + 1
		err = e.deliver.deliverOne(ctx, stop, e, m, true)
		if pe, ok := errors.AsType[*PoisonError](err); ok {
			passed++ // refused before, dead-lettered by the live member then
			if err = e.deadLetter(ctx, stop, true, pe); err == nil {
				continue
			}
		}
		if err != nil {
			return false, err
		}
		e.acknowledged(m)
		n++
		if e.Metrics != nil {
			e.Metrics.Replayed.Inc()
			e.Metrics.Delivered.Inc()
		}
	}
	if e.Metrics != nil {
		e.Metrics.Rewinds.Inc()
	}
	if e.OnRewind != nil {
		e.OnRewind(p, from, to, n)
	}
	return n+passed > 0, nil
}
