package replay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ms2m/ms2m/internal/expect"
)

// fakeCommitted is a group's committed offsets that counts the polls and
// how many ran at once.
type fakeCommitted struct {
	mu              sync.Mutex
	offsets         map[int]int64
	polls, inFlight atomic.Int64
	maxInFlight     atomic.Int64
	fail            atomic.Bool
}

func (f *fakeCommitted) committed(context.Context) (map[int]int64, error) {
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for m := f.maxInFlight.Load(); n > m && !f.maxInFlight.CompareAndSwap(m, n); m = f.maxInFlight.Load() {
	}
	f.polls.Add(1)
	if f.fail.Load() {
		return nil, errors.New("broker unreachable")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[int]int64, len(f.offsets))
	for p, o := range f.offsets {
		out[p] = o
	}
	return out, nil
}

func (f *fakeCommitted) set(p int, o int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.offsets[p] = o
}

// Replaying 64 partitions behind the live member asks the broker through
// one poller: never two polls at once, none while nobody waits, and each
// waiter returns once its partition's committed offset passed its own,
// whatever the others wait for, a failed poll included.
func TestOneCommittedPollerServesEveryPartition(t *testing.T) {
	f := &fakeCommitted{offsets: map[int]int64{}}
	p := &committedPoller{committed: f.committed, interval: time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), expect.Timeout)
	defer cancel()

	const partitions = 64
	got := make([]atomic.Int64, partitions)
	var wg sync.WaitGroup
	for part := range partitions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := p.waitPast(ctx, part, int64(part))
			if err != nil {
				t.Errorf("partition %d: %v", part, err)
			}
			got[part].Store(c)
		}()
	}
	f.fail.Store(true)
	expect.Eventually(t, "a few failed polls", func() error {
		if f.polls.Load() < 3 {
			return fmt.Errorf("%d polls", f.polls.Load())
		}
		return nil
	})
	f.fail.Store(false)
	// Partition p waits for an offset past p: committing p leaves it
	// waiting, p+1 releases it.
	for part := range partitions {
		f.set(part, int64(part))
	}
	for part := range partitions {
		if part%2 == 0 {
			f.set(part, int64(part)+1)
		}
	}
	expect.Eventually(t, "even partitions released", func() error {
		for part := 0; part < partitions; part += 2 {
			if got[part].Load() != int64(part)+1 {
				return fmt.Errorf("partition %d: still waiting", part)
			}
		}
		return nil
	})
	for part := 1; part < partitions; part += 2 {
		if got[part].Load() != 0 {
			t.Fatalf("partition %d returned %d, its offset %d is not committed", part, got[part].Load(), part)
		}
	}
	for part := 1; part < partitions; part += 2 {
		f.set(part, int64(part)+5)
	}
	wg.Wait()
	for part := 1; part < partitions; part += 2 {
		if got[part].Load() != int64(part)+5 {
			t.Errorf("partition %d returned %d, want %d", part, got[part].Load(), part+5)
		}
	}
	if m := f.maxInFlight.Load(); m != 1 {
		t.Errorf("%d polls ran at once; want one poller", m)
	}
	expect.Eventually(t, "the poller stopped", func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.running {
			return errors.New("still polling with nobody waiting")
		}
		return nil
	})
	polls := f.polls.Load()
	// A waiter whose offset an earlier poll already passed needs no poll.
	if c, err := p.waitPast(ctx, 0, 0); err != nil || c != 1 {
		t.Fatalf("waitPast(0, 0) = %d, %v; want 1", c, err)
	}
	// A waiter that gives up stops being waited for.
	short, stop := context.WithTimeout(ctx, 20*time.Millisecond)
	defer stop()
	if _, err := p.waitPast(short, 0, 100); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waitPast past its deadline = %v", err)
	}
	expect.Eventually(t, "the poller stopped again", func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.running {
			return errors.New("still polling with nobody waiting")
		}
		return nil
	})
	if f.polls.Load() == polls {
		t.Error("the waiter for offset 100 caused no poll")
	}
}

// At a handover the fence is the group's committed offsets: the replay
// reads up to it at once, without waiting for the poller's next look (on
// the handover's stall), and a poll answered with older offsets, started
// before, does not take it back.
func TestAFenceReleasesTheReplayWithoutAPoll(t *testing.T) {
	f := &fakeCommitted{offsets: map[int]int64{0: 3}}
	p := &committedPoller{committed: f.committed, interval: time.Hour} // one poll, then none for the test's life
	ctx, cancel := context.WithTimeout(context.Background(), expect.Timeout)
	defer cancel()
	released := make(chan int64, 1)
	go func() {
		c, err := p.waitPast(ctx, 0, 5)
		if err != nil {
			t.Error(err)
		}
		released <- c
	}()
	expect.Eventually(t, "the first poll", func() error {
		if f.polls.Load() < 1 {
			return fmt.Errorf("no poll yet")
		}
		return nil
	})
	p.raise(map[int]int64{0: 10})
	select {
	case c := <-released:
		if c != 10 {
			t.Fatalf("released at %d; want the fence 10", c)
		}
	case <-ctx.Done():
		t.Fatal("the fence did not release the replay: it waited for a poll")
	}
	if c, err := p.waitPast(ctx, 0, 9); err != nil || c != 10 || f.polls.Load() != 1 {
		t.Fatalf("past 9: %d, %v after %d polls; want the fence at once", c, err, f.polls.Load())
	}
}
