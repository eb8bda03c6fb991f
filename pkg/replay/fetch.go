package replay

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// The sidecar's memory limit is 64 MiB, and a pod may own many partitions
// of large messages. kafka-go's partition Reader fetches ahead on its own,
// MaxBytes per fetch and up to QueueCapacity messages, whatever the app
// takes: with 64 partitions of 1 MiB messages that is hundreds of MiB even
// with a queue of one (each reader still holds a decoded message, its
// queue's and the pump's). So the replay source and the static member
// fetch each partition themselves (pump), and every fetch first takes its
// size from one budget per Kafka, given back as the engine takes the
// messages: what the sidecar holds that the app has not taken is bounded by
// the budget, not by the number of partitions.
const (
	// fetchBytes is the most a fetch asks for. Kafka (fetch v3 and later)
	// returns the first record batch of a partition even when it is larger,
	// so a larger message is still delivered, alone.
	fetchBytes = 1 << 20
	// DefaultBufferBytes is the default Kafka.BufferBytes.
	DefaultBufferBytes = 8 << 20
)

// budget bounds the bytes fetched and not yet taken by the engine. Fetches
// are admitted in the order they asked: a partition with nothing new, which
// fetches again as soon as its fetch returns empty, cannot keep the room
// from the partitions that have messages.
type budget struct {
	mu      sync.Mutex
	limit   int64
	used    int64
	waiting []*budgetWaiter
}

type budgetWaiter struct {
	n       int64
	granted chan struct{}
}

func newBudget(limit int64) *budget {
	return &budget{limit: limit}
}

// acquire waits until less than the limit is held and every earlier
// acquire was served, then holds n more. A fetch is admitted while there
// is any room left, so one that turns out larger than the room (a record
// batch above fetchBytes) never waits for room that cannot come; the
// overshoot is at most one fetch.
func (b *budget) acquire(ctx context.Context, n int64) error {
	b.mu.Lock()
	if len(b.waiting) == 0 && b.used < b.limit {
		b.used += n
		b.mu.Unlock()
		return nil
	}
	w := &budgetWaiter{n: n, granted: make(chan struct{})}
	b.waiting = append(b.waiting, w)
	b.mu.Unlock()
	select {
	case <-w.granted:
		return nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	select {
	case <-w.granted: // meanwhile
		b.mu.Unlock()
		b.release(n)
		return ctx.Err()
	default:
	}
	b.waiting = slices.DeleteFunc(b.waiting, func(o *budgetWaiter) bool { return o == w })
	b.mu.Unlock()
	return ctx.Err()
}

// release gives n back (a negative n holds more: a fetch larger than
// what it acquired).
func (b *budget) release(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	for len(b.waiting) > 0 && b.used < b.limit {
		w := b.waiting[0]
		b.waiting = b.waiting[1:]
		b.used += w.n
		close(w.granted)
	}
}

func (b *budget) held() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// messageBytes is what a fetched message holds.
func messageBytes(m kafka.Message) int64 {
	n := len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return int64(n)
}

// fetch returns partition's messages from offset on, one fetch's worth,
// with the budget held for them.
func (k *Kafka) fetch(ctx context.Context, c *kafka.Client, partition int, offset int64) ([]kafka.Message, error) {
	b := k.buffer()
	if err := b.acquire(ctx, fetchBytes); err != nil {
		return nil, err
	}
	resp, err := c.Fetch(ctx, &kafka.FetchRequest{Topic: k.Topic, Partition: partition, Offset: offset,
		MinBytes: 1, MaxBytes: fetchBytes, MaxWait: k.maxWait()})
	if err == nil {
		err = resp.Error
	}
	if err != nil {
		b.release(fetchBytes)
		return nil, err
	}
	var msgs []kafka.Message
	var size int64
	for {
		r, err := resp.Records.ReadRecord()
		if err != nil {
			if !errors.Is(err, io.EOF) && len(msgs) == 0 {
				b.release(fetchBytes)
				return nil, err
			}
			break // a truncated batch at the end: fetched again from there
		}
		if r.Offset < offset {
			continue // the batch holding offset starts before it
		}
		m := kafka.Message{Topic: k.Topic, Partition: partition, Offset: r.Offset, Time: r.Time,
			HighWaterMark: resp.HighWatermark, Headers: append([]kafka.Header(nil), r.Headers...)}
		if m.Key, err = readBytes(r.Key); err == nil {
			m.Value, err = readBytes(r.Value)
		}
		if err != nil {
			if len(msgs) == 0 {
				b.release(fetchBytes)
				return nil, err
			}
			break
		}
		msgs = append(msgs, m)
		size += messageBytes(m)
	}
	b.release(fetchBytes - size)
	return msgs, nil
}

func readBytes(b kafka.Bytes) ([]byte, error) {
	if b == nil {
		return nil, nil
	}
	defer func() { _ = b.Close() }()
	out := make([]byte, b.Len())
	_, err := io.ReadFull(b, out)
	return out, err
}

// pump feeds partition's messages from offset from into m, in order, each
// once wait (when not nil) says the group has committed past it. It asks
// for the group's offsets before fetching, so a partition waiting for the
// live member holds no messages; fetched messages the group has not
// committed yet are dropped and fetched again.
func (m *merged) pump(ctx context.Context, k *Kafka, partition int, from int64, wait func(context.Context, int, int64) (int64, error)) {
	defer m.wg.Done()
	b := k.buffer()
	// Its own connection: a fetch waits up to MaxWait at the broker, which
	// answers a connection's requests in order, so on the shared one every
	// commit, heartbeat and poll would queue behind the partitions' fetches.
	tr := &kafka.Transport{MetadataTTL: metadataTTL}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(k.Brokers...), Timeout: 10 * time.Second, Transport: tr}
	offset := from
	var limit int64 // the committed offset last seen: below it, no need to ask again
	var backoff time.Duration
	for ctx.Err() == nil {
		if wait != nil && offset >= limit {
			var err error
			if limit, err = wait(ctx, partition, offset); err != nil {
				return // ctx ended
			}
		}
		msgs, err := k.fetch(ctx, c, partition, offset)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// Reported (the engine logs it) and fetched again: the broker
			// unreachable for a while.
			select {
			case m.out <- fetched{err: err}:
			case <-ctx.Done():
				return
			}
			backoff = nextBackoff(backoff)
			if !sleepCtx(ctx, jitter(backoff)) {
				return
			}
			continue
		}
		backoff = 0
		for i, msg := range msgs {
			if wait != nil && msg.Offset >= limit {
				releaseAll(b, msgs[i:])
				break
			}
			select {
			case m.out <- fetched{m: msg}:
				b.release(messageBytes(msg))
				offset = msg.Offset + 1
			case <-ctx.Done():
				releaseAll(b, msgs[i:])
				return
			}
		}
	}
}

func releaseAll(b *budget, msgs []kafka.Message) {
	var n int64
	for _, m := range msgs {
		n += messageBytes(m)
	}
	b.release(n)
}
