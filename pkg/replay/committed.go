package replay

import (
	"context"
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

	// closely is the interval while following the live member closely
	// (see follow), until closelyUntil.
	closely time.Duration

	mu           sync.Mutex
	waiters      int
	running      bool
	last         map[int]int64 // the offsets of the last successful poll
	polled       chan struct{} // closed after each poll
	closelyUntil time.Time
	hurry        chan struct{} // cuts a poll's wait short when follow starts
}

// pollTimeout bounds one poll.
const pollTimeout = 10 * time.Second

// waitPast returns the committed offset of partition once it is past
// offset, or ctx's error. Offsets seen in an earlier poll count: the
// committed offsets only grow.
func (p *committedPoller) waitPast(ctx context.Context, partition int, offset int64) (int64, error) {
	p.mu.Lock()
	p.waiters++
	if p.polled == nil {
		p.polled = make(chan struct{})
	}
	if !p.running {
		p.running = true
		go p.run()
	}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.waiters--
		p.mu.Unlock()
	}()
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
		if err == nil {
			// Merged: a raise (a fence) during the poll stays.
			for q, c := range p.last {
				committed[q] = max(committed[q], c)
			}
			p.last = committed
		}
		close(p.polled)
		p.polled = make(chan struct{})
		interval := p.interval
		if time.Now().Before(p.closelyUntil) {
			interval = min(interval, p.closely)
		}
		hurry := p.hurryLocked()
		p.mu.Unlock()
		t := time.NewTimer(interval)
		select {
		case <-t.C:
		case <-hurry:
			t.Stop()
		}
	}
}

func (p *committedPoller) hurryLocked() chan struct{} {
	if p.hurry == nil {
		p.hurry = make(chan struct{}, 1)
	}
	return p.hurry
}

// follow polls every closely interval for the next d: a target the
// controller saw caught up is fenced next, and whatever the live member
// commits before the fence is replayed on the handover's stall unless the
// replay already read it. At the usual interval (MaxWait/5) that was a
// message or two at 100 msg/s.
func (p *committedPoller) follow(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closelyUntil = time.Now().Add(d)
	select {
	case p.hurryLocked() <- struct{}{}:
	default:
	}
}

// unfollow ends follow early: the fence is known, nothing is left to
// follow.
func (p *committedPoller) unfollow() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closelyUntil = time.Time{}
}

// waitCommittedPast returns the group's committed offset of partition once
// it is past offset, or ctx's error.
func (k *Kafka) waitCommittedPast(ctx context.Context, partition int, offset int64) (int64, error) {
	k.transport()
	return k.poll.waitPast(ctx, partition, offset)
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

// committedAtLeast implements committedRaiser.
func (k *Kafka) committedAtLeast(offs map[int]int64) {
	k.transport()
	k.poll.raise(offs)
}

// followCommitted implements committedRaiser.
func (k *Kafka) followCommitted(d time.Duration) {
	k.transport()
	if d > 0 {
		k.poll.follow(d)
	} else {
		k.poll.unfollow()
	}
}
