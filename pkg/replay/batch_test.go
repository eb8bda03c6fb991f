package replay

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ms2m/ms2m/internal/expect"
)

// batchApp is an app that opted in to batches. It applies a batch (records
// its offsets per partition, live or replayed) only when it answers 2xx. It
// can refuse its n-th batch once and hold the batch holding a given offset of
// partition 0 until released.
type batchApp struct {
	mu      sync.Mutex
	seen    batchRecord
	failNth int // 1-based; 0 for none
	holdAt  int64
	held    chan struct{}
	release chan struct{}
}

// batchRecord is what a batchApp saw.
type batchRecord struct {
	applied
	values   []string
	batches  []Batch // every POST, in arrival order, refused or not
	problems []string
}

func newBatchApp() *batchApp {
	return &batchApp{seen: batchRecord{applied: newApplied()}, holdAt: -1,
		held: make(chan struct{}), release: make(chan struct{})}
}

func (a *batchApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var b Batch
	err := json.NewDecoder(r.Body).Decode(&b)
	a.mu.Lock()
	switch {
	case err != nil:
		a.seen.problems = append(a.seen.problems, "undecodable batch: "+err.Error())
	case r.Header.Get("Content-Type") != BatchContentType:
		a.seen.problems = append(a.seen.problems, "content type "+r.Header.Get("Content-Type"))
	case r.Header.Get(HeaderBatchSize) != strconv.Itoa(len(b.Messages)):
		a.seen.problems = append(a.seen.problems, fmt.Sprintf("%s %s for %d messages", HeaderBatchSize, r.Header.Get(HeaderBatchSize), len(b.Messages)))
	case (r.Header.Get(HeaderReplay) == "true") != b.Replay:
		a.seen.problems = append(a.seen.problems, "replay header and body disagree")
	}
	for _, m := range b.Messages {
		if m.Topic != topic || len(m.Headers) != 1 || m.Headers[0].Key != "seq" || string(m.Headers[0].Value) != string(m.Value) {
			a.seen.problems = append(a.seen.problems, fmt.Sprintf("metadata lost on %d@%d: %+v", m.Partition, m.Offset, m))
		}
	}
	a.seen.batches = append(a.seen.batches, b)
	n := len(a.seen.batches)
	hold := a.holdAt >= 0 && slices.ContainsFunc(b.Messages, func(m BatchMessage) bool { return m.Partition == 0 && m.Offset == a.holdAt })
	a.mu.Unlock()
	if hold {
		close(a.held)
		<-a.release
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if n == a.failNth {
		http.Error(w, "not now", http.StatusServiceUnavailable)
		return
	}
	for _, m := range b.Messages {
		a.seen.add(m.Partition, m.Offset, b.Replay)
		a.seen.values = append(a.seen.values, string(m.Value))
	}
}

func (a *batchApp) snapshot() batchRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	return batchRecord{applied: a.seen.applied.clone(), values: slices.Clone(a.seen.values),
		batches: slices.Clone(a.seen.batches), problems: slices.Clone(a.seen.problems)}
}

func (b *broker) committedAll(ctx context.Context, group string, partitions int) (map[int]int64, error) {
	c := &kafka.Client{Addr: kafka.TCP(b.addr), Timeout: 5 * time.Second}
	parts := make([]int, partitions)
	for i := range parts {
		parts[i] = i
	}
	resp, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return nil, err
	}
	out := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		out[p.Partition] = max(p.CommittedOffset, 0)
	}
	return out, nil
}

// TestBatchDeliveryKeepsOrderAndCommitsOnlyAcknowledgedBatches runs a live
// sidecar for an app that takes batches of up to 8, on two partitions: the
// group's committed offsets never include a message of a batch the app has
// not acknowledged, a refused batch comes back whole, and every message
// reaches the app once, in order per partition.
func TestBatchDeliveryKeepsOrderAndCommitsOnlyAcknowledgedBatches(t *testing.T) {
	b := startBroker(t, 2)
	a := newBatchApp()
	a.failNth = 2
	a.holdAt = 60
	d := deliverer(t, a)
	d.BatchSize = 8
	e := NewLive(b.sources("batch"), d)
	runEngine(t, e)
	const n = 300
	b.produce(t, 0, n)

	<-a.held
	ctx, cancel := context.WithTimeout(context.Background(), expect.Timeout)
	defer cancel()
	live := a.snapshot().live
	committed, err := b.committedAll(ctx, "batch", 2)
	if err != nil {
		t.Fatal(err)
	}
	for p := range 2 {
		if committed[p] != int64(len(live[p])) {
			t.Fatalf("partition %d: committed %d while the app has applied %d and holds a batch: the commit ran ahead of the app",
				p, committed[p], len(live[p]))
		}
	}
	close(a.release)

	expect.Eventually(t, "every message applied once, in order per partition", func() error {
		seen := a.snapshot()
		live, values := seen.live, seen.values
		if len(seen.problems) > 0 {
			return fmt.Errorf("app saw: %v", seen.problems)
		}
		end, err := b.endOffsets(ctx)
		if err != nil {
			return err
		}
		if end[0] == 0 || end[1] == 0 {
			t.Fatalf("the producer left a partition empty (%v): nothing to say about order per partition", end)
		}
		for p, e := range end {
			if !equal(live[p], seq(0, e)) {
				return fmt.Errorf("partition %d: applied %d messages, not 0..%d exactly once in order", p, len(live[p]), e-1)
			}
		}
		slices.SortFunc(values, func(x, y string) int { return atoi(x) - atoi(y) })
		for i, v := range values {
			if v != strconv.Itoa(i) {
				return fmt.Errorf("values applied: %d of %d, first gap or duplicate at %d (%s)", len(values), n, i, v)
			}
		}
		if len(values) != n {
			return fmt.Errorf("%d values applied, want %d", len(values), n)
		}
		committed, err := b.committedAll(ctx, "batch", 2)
		if err != nil || !maps.Equal(committed, end) {
			return fmt.Errorf("committed %v, want the ends %v (%v)", committed, end, err)
		}
		return nil
	})

	batches := a.snapshot().batches
	if len(batches) < 3 || !slices.EqualFunc(batches[1].Messages, batches[2].Messages, func(x, y BatchMessage) bool {
		return x.Partition == y.Partition && x.Offset == y.Offset
	}) {
		t.Errorf("the refused batch was not delivered again whole")
	}
	largest := 0
	for _, bt := range batches {
		largest = max(largest, len(bt.Messages))
		if len(bt.Messages) > 8 {
			t.Errorf("a batch of %d messages; the app asked for at most 8", len(bt.Messages))
		}
	}
	if largest < 2 {
		t.Errorf("no batch held more than one message: the app's opt-in was ignored")
	}
	t.Logf("%d POSTs for %d messages", len(batches), n)
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
