package replay

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ms2m/ms2m/internal/expect"
)

// positionApp keeps, per partition, the next offset its state has not seen,
// as the app contract asks: it acknowledges a message below it without
// applying it, asks for a rewind (409 with Ms2m-Next-Offset) when the
// sidecar says it acknowledged more (Ms2m-Previous-Offset), and refuses
// (422) every message whose value is "poison".
type positionApp struct {
	mu      sync.Mutex
	next    map[int]int64
	applied applied
	refused int
}

func newPositionApp() *positionApp {
	return &positionApp{next: map[int]int64{}, applied: newApplied()}
}

func (a *positionApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var msgs []BatchMessage
	replayed := r.Header.Get(HeaderReplay) == "true"
	if r.Header.Get("Content-Type") == BatchContentType {
		var b Batch
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		msgs, replayed = b.Messages, b.Replay
	} else {
		p, _ := strconv.Atoi(r.Header.Get(HeaderPartition))
		off, _ := strconv.ParseInt(r.Header.Get(HeaderOffset), 10, 64)
		value, _ := io.ReadAll(r.Body)
		m := BatchMessage{Partition: p, Offset: off, Value: value}
		if v, err := strconv.ParseInt(r.Header.Get(HeaderPreviousOffset), 10, 64); err == nil {
			m.PreviousOffset = &v
		}
		msgs = []BatchMessage{m}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, m := range msgs {
		next, known := a.next[m.Partition]
		switch {
		case known && m.Offset < next:
			continue // applied already
		case known && m.PreviousOffset != nil && next <= *m.PreviousOffset:
			w.Header().Set(HeaderNextOffset, fmt.Sprintf("%d:%d", m.Partition, next))
			http.Error(w, fmt.Sprintf("offset %d: my state ends at %d", m.Offset, next), http.StatusConflict)
			return
		case string(m.Value) == "poison":
			a.refused++
			http.Error(w, "poison: not a sequence number", http.StatusUnprocessableEntity)
			return
		}
		a.applied.add(m.Partition, m.Offset, replayed)
		a.next[m.Partition] = m.Offset + 1
	}
}

func (a *positionApp) snapshot() (map[int]int64, applied) {
	a.mu.Lock()
	defer a.mu.Unlock()
	next := map[int]int64{}
	for p, o := range a.next {
		next[p] = o
	}
	return next, a.applied.clone()
}

// restore puts the app back where a snapshot left it: a restored container
// restarted from its checkpoint image.
func (a *positionApp) restore(next map[int]int64, ap applied) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.next, a.applied = next, ap
}

const deadLetters = topic + ".ms2m-dead-letter"

// brokerWithDeadLetters starts a broker with the topic and its dead-letter
// topic.
func brokerWithDeadLetters(t *testing.T, partitions int32) string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topic), kfake.SeedTopics(1, deadLetters))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()[0]
}

// produceTo writes values to one partition.
func produceTo(t *testing.T, addr string, partition int, values ...string) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(addr), Topic: topic, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll,
		Balancer: kafka.BalancerFunc(func(kafka.Message, ...int) int { return partition })}
	defer func() { _ = w.Close() }()
	msgs := make([]kafka.Message, len(values))
	for i, v := range values {
		msgs[i] = kafka.Message{Key: []byte{0, byte(i), 0xff}, Value: []byte(v)}
	}
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatalf("producing: %v", err)
	}
}

func committedOf(t *testing.T, addr, group string, partitions ...int) map[int]int64 {
	t.Helper()
	resp, err := (&kafka.Client{Addr: kafka.TCP(addr), Timeout: 5 * time.Second}).OffsetFetch(context.Background(),
		&kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: partitions}})
	if err != nil {
		t.Fatalf("fetching committed offsets: %v", err)
	}
	out := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		out[p.Partition] = p.CommittedOffset
	}
	return out
}

// A message the app refuses on every attempt goes to the dead-letter topic,
// exactly as it was plus where it came from and why; its partition and the
// others go on, and the group commits past it.
func TestPoisonMessageIsDeadLetteredAndTheRestFlows(t *testing.T) {
	for _, batch := range []int{1, 8} {
		t.Run(fmt.Sprintf("batch=%d", batch), func(t *testing.T) {
			addr := brokerWithDeadLetters(t, 2)
			a := newPositionApp()
			d := deliverer(t, a)
			d.MaxAttempts, d.BatchSize = 3, batch
			var poisoned []*PoisonError
			var mu sync.Mutex
			group := "g-" + t.Name()
			e := NewLive(&Kafka{Brokers: []string{addr}, Topic: topic, Group: group, MaxWait: 20 * time.Millisecond}, d)
			e.OnPoison = func(p *PoisonError, dl bool) {
				mu.Lock()
				defer mu.Unlock()
				if !dl {
					t.Errorf("a live member passed over %v instead of dead-lettering it", p)
				}
				poisoned = append(poisoned, p)
			}
			runEngine(t, e)
			produceTo(t, addr, 0, "0", "1", "poison", "3")
			produceTo(t, addr, 1, "0", "1")

			expect.Eventually(t, "every other message applied", func() error {
				_, ap := a.snapshot()
				if !equal(ap.live[0], []int64{0, 1, 3}) || !equal(ap.live[1], []int64{0, 1}) {
					return fmt.Errorf("applied live %v", ap.live)
				}
				return nil
			})
			expect.Eventually(t, "the group committed past the poison message", func() error {
				if got := committedOf(t, addr, group, 0, 1); got[0] != 4 || got[1] != 2 {
					return fmt.Errorf("committed %v, want 0:4 1:2", got)
				}
				return nil
			})
			if pos := e.Position(); pos.DeadLettered != 1 {
				t.Errorf("position reports %d dead-lettered, want 1", pos.DeadLettered)
			}
			mu.Lock()
			if len(poisoned) != 1 || poisoned[0].Message.Offset != 2 || poisoned[0].Attempts != 3 || poisoned[0].Err.Status != 422 {
				t.Errorf("poison reports %v: want offset 2 refused 3 times with 422", poisoned)
			}
			mu.Unlock()

			r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, Topic: deadLetters, Partition: 0, MaxWait: 20 * time.Millisecond})
			defer func() { _ = r.Close() }()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatalf("reading the dead-letter topic: %v", err)
			}
			h := map[string]string{}
			for _, x := range m.Headers {
				h[x.Key] = string(x.Value)
			}
			if string(m.Value) != "poison" || !slices.Equal(m.Key, []byte{0, 2, 0xff}) || h[DeadLetterHeaderTopic] != topic ||
				h[DeadLetterHeaderPartition] != "0" || h[DeadLetterHeaderOffset] != "2" || h[DeadLetterHeaderGroup] != group ||
				h[DeadLetterHeaderReason] != "app answered 422 Unprocessable Entity: poison: not a sequence number" {
				t.Errorf("dead letter %q key %v headers %v: want the original record and where and why", m.Value, m.Key, h)
			}
		})
	}
}

// A pause (and so a checkpoint or a fence) does not wait for a message the
// app keeps refusing: it answers at once, the message not counted as
// delivered, and after the resume the policy runs its course.
func TestPauseAnswersWhileTheAppRefusesAMessage(t *testing.T) {
	addr := brokerWithDeadLetters(t, 1)
	a := newPositionApp()
	d := deliverer(t, a)
	d.MaxAttempts, d.MinBackoff, d.MaxBackoff = 4, 300*time.Millisecond, 300*time.Millisecond
	e := NewLive(&Kafka{Brokers: []string{addr}, Topic: topic, Group: "g-" + t.Name(), MaxWait: 20 * time.Millisecond}, d)
	runEngine(t, e)
	produceTo(t, addr, 0, "0", "poison", "2")
	expect.Eventually(t, "the app refusing offset 1", func() error {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.refused == 0 {
			return fmt.Errorf("not refused yet")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	pos, err := e.Pause(ctx)
	if err != nil {
		t.Fatalf("pause while the app refuses a message: %v", err)
	}
	if pos.Next[0] != 1 {
		t.Fatalf("paused at %v: want 0:1 (the refused message is not delivered)", pos.Next)
	}
	mustResume(t, e)
	expect.Eventually(t, "dead-lettered after the resume, then the rest applied", func() error {
		_, ap := a.snapshot()
		if !equal(ap.live[0], []int64{0, 2}) {
			return fmt.Errorf("applied %v", ap.live[0])
		}
		return nil
	})
	if got := e.Position().DeadLettered; got != 1 {
		t.Errorf("dead-lettered %d, want 1", got)
	}
}

// A restored app container that restarts comes back from its image, the
// checkpoint, at the checkpoint's offsets: it asks for what it lost with a
// 409, and the sidecar gives it those messages as replay (no side effects
// again), then goes on live. Nothing is lost or applied twice; a message
// dead-lettered meanwhile is passed over, not awaited.
func TestRewindGivesARestartedAppWhatItLost(t *testing.T) {
	for _, batch := range []int{1, 8} {
		t.Run(fmt.Sprintf("batch=%d", batch), func(t *testing.T) {
			addr := brokerWithDeadLetters(t, 1)
			a := newPositionApp()
			d := deliverer(t, a)
			d.BatchSize, d.MaxAttempts = batch, 2
			e := NewLive(&Kafka{Brokers: []string{addr}, Topic: topic, Group: "g-" + t.Name(), MaxWait: 20 * time.Millisecond}, d)
			var rewinds [][3]int64
			var mu sync.Mutex
			e.OnRewind = func(p int, from, to int64, n int) {
				mu.Lock()
				defer mu.Unlock()
				rewinds = append(rewinds, [3]int64{from, to, int64(n)})
			}
			runEngine(t, e)
			produceTo(t, addr, 0, "0", "1", "2", "3", "4")
			expect.Eventually(t, "0-4 applied", func() error {
				if next, _ := a.snapshot(); next[0] != 5 {
					return fmt.Errorf("app at %v", next)
				}
				return nil
			})
			checkpoint, state := a.snapshot()
			produceTo(t, addr, 0, "5", "poison", "7", "8", "9")
			expect.Eventually(t, "5-9 applied but the poison", func() error {
				if next, _ := a.snapshot(); next[0] != 10 {
					return fmt.Errorf("app at %v", next)
				}
				return nil
			})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := e.Pause(ctx); err != nil {
				t.Fatal(err)
			}
			a.restore(checkpoint, state) // the container restarts from the checkpoint image
			mustResume(t, e)
			produceTo(t, addr, 0, "10", "11", "12", "13", "14")
			expect.Eventually(t, "the lost messages replayed, then live again", func() error {
				_, ap := a.snapshot()
				if !equal(ap.live[0], []int64{0, 1, 2, 3, 4, 10, 11, 12, 13, 14}) || !equal(ap.replay[0], []int64{5, 7, 8, 9}) {
					return fmt.Errorf("applied live %v, replayed %v", ap.live[0], ap.replay[0])
				}
				return nil
			})
			mu.Lock()
			defer mu.Unlock()
			if len(rewinds) != 1 || rewinds[0] != [3]int64{5, 10, 4} {
				t.Errorf("rewinds %v: want one, [5, 10), 4 delivered", rewinds)
			}
			if got := e.Position().DeadLettered; got != 2 {
				t.Errorf("dead-lettered %d: want 2 (once live, once passed over in the rewind)", got)
			}
		})
	}
}
