package replay

import (
	"context"
	"maps"
	"sync"
	"time"
)

// committedPoller asks the broker for the group's committed offsets on
// behalf of every partition waiting for them: one goroutine per Kafka (per
// sidecar), polling only while someone waits. Replaying 64 partitions
// behind the live member used to mean 64 pollers, each sending Metadata and
// OffsetFetch every few milliseconds.
type committedPoller struct {
	committed func(context.Context) (map[int]int64, error)
	interval  time.Duration

	mu      sync.Mutex
	waiters int
	running bool
	last    map[int]int64 // the offsets of the last successful poll
	lastErr error         // the last poll's error
	polls   int           // how many polls have answered
	polled  chan struct{} // closed after each poll
}

// pollTimeout bounds one poll.
const pollTimeout = 10 * time.Second

// join counts the caller as waiting, so that the poll runs, until it
// calls the function returned.
func (p *committedPoller) join() (leave func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.waiters++
	if p.polled == nil {
		p.polled = make(chan struct{})
	}
	if !p.running {
		p.running = true
		go p.run()
	}
	return func() {
		p.mu.Lock()
		p.waiters--
		p.mu.Unlock()
	}
}

// waitPast returns the committed offset of partition once it is past
// offset, or ctx's error. Offsets seen in an earlier poll count: the
// committed offsets only grow.
func (p *committedPoller) waitPast(ctx context.Context, partition int, offset int64) (int64, error) {
	defer p.join()()
	for {
		p.mu.Lock()
		c, ok := p.last[partition]
		polled := p.polled
		p.mu.Unlock()
		if ok && offset < c {
			return c, nil
		}
		select {
		case <-polled:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// fresh returns the committed offsets once the poll under way (or the
// next one) has answered, or that poll's error, or ctx's: a look at the
// offsets that shares the poll with every other waiter instead of asking
// the broker itself.
func (p *committedPoller) fresh(ctx context.Context) (map[int]int64, error) {
	defer p.join()()
	p.mu.Lock()
	seen := p.polls
	p.mu.Unlock()
	for {
		p.mu.Lock()
		polled, answered := p.polled, p.polls > seen
		last, err := maps.Clone(p.last), p.lastErr
		p.mu.Unlock()
		switch {
		case answered && err != nil:
			return nil, err
		case answered:
			return last, nil
		}
		// A raise wakes the waiters too, but is no answer for all
		// partitions.
		select {
		case <-polled:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// run polls until nobody waits.
func (p *committedPoller) run() {
	for {
		p.mu.Lock()
		if p.waiters == 0 {
			p.running = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), pollTimeout)
		committed, err := p.committed(ctx)
		cancel()
		p.mu.Lock()
		p.lastErr = err
		p.polls++
		if err == nil {
			// Merged: a raise (a fence) during the poll stays.
			for q, c := range p.last {
				committed[q] = max(committed[q], c)
			}
			p.last = committed
		}
		close(p.polled)
		p.polled = make(chan struct{})
		p.mu.Unlock()
		time.Sleep(p.interval)
	}
}

// waitCommittedPast returns the group's committed offset of partition once
// it is past offset, or ctx's error.
func (k *Kafka) waitCommittedPast(ctx context.Context, partition int, offset int64) (int64, error) {
	k.transport()
	return k.poll.waitPast(ctx, partition, offset)
}

// freshCommitted implements committedSharer.
func (k *Kafka) freshCommitted(ctx context.Context) (map[int]int64, error) {
	k.transport()
	return k.poll.fresh(ctx)
}

// raise records offsets known to be committed (they only grow) and wakes
// the waiters, without a poll.
func (p *committedPoller) raise(offs map[int]int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	last := make(map[int]int64, len(p.last)+len(offs))
	for q, c := range p.last {
		last[q] = c
	}
	for q, c := range offs {
		last[q] = max(last[q], c)
	}
	p.last = last
	if p.polled != nil {
		close(p.polled)
		p.polled = make(chan struct{})
	}
}

// committedAtLeast implements fenceRaiser.
func (k *Kafka) committedAtLeast(offs map[int]int64) {
	k.transport()
	k.poll.raise(offs)
}
