package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ms2m/ms2m/examples/statefulapp"
)

// observer tails the input and the effects topic of one trial and stamps
// every record with the time it arrived here. The example writes no record
// timestamps (kafka-go leaves CreateTime at zero), so these arrival times
// are the clock both methods are measured by: an input record's is when it
// was produced, an effect's is when the consumer finished processing that
// message live (the app publishes the effect synchronously before it
// acknowledges). Fetches long-poll the broker, which answers as soon as a
// record is appended, so the stamp trails the event by about a millisecond.
type observer struct {
	mu       sync.Mutex
	produced map[int64]time.Time
	effects  []stamped
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	err      error
}

// stamped is one record's sequence number and arrival time.
type stamped struct {
	Seq int64
	At  time.Time
}

// observe starts tailing the topics (which must exist, with partitions
// partitions each) from their first offset.
func observe(ctx context.Context, brokers []string, input, effects string, partitions int) *observer {
	ctx, cancel := context.WithCancel(ctx)
	o := &observer{produced: map[int64]time.Time{}, cancel: cancel}
	for p := range partitions {
		o.tail(ctx, brokers, input, p, func(s stamped) { o.produced[s.Seq] = s.At })
		o.tail(ctx, brokers, effects, p, func(s stamped) { o.effects = append(o.effects, s) })
	}
	return o
}

func (o *observer) tail(ctx context.Context, brokers []string, topic string, partition int, record func(stamped)) {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: brokers, Topic: topic, Partition: partition,
		MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 500 * time.Millisecond, QueueCapacity: 1000,
	})
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		defer func() { _ = r.Close() }()
		for {
			m, err := r.ReadMessage(ctx)
			now := time.Now()
			if err != nil {
				if ctx.Err() == nil {
					o.fail(fmt.Errorf("tailing %s/%d: %w", topic, partition, err))
				}
				return
			}
			seq, err := statefulapp.ParseSeq(m.Value)
			if err != nil {
				o.fail(fmt.Errorf("%s/%d@%d: %w", topic, partition, m.Offset, err))
				continue
			}
			o.mu.Lock()
			record(stamped{Seq: seq, At: now})
			o.mu.Unlock()
		}
	}()
}

func (o *observer) fail(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.err = errors.Join(o.err, err)
}

// producedCount is how many input records have arrived.
func (o *observer) producedCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.produced)
}

// stop ends the tailing and returns what was seen.
func (o *observer) stop() (map[int64]time.Time, []stamped, error) {
	o.cancel()
	o.wg.Wait()
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.produced, o.effects, o.err
}
