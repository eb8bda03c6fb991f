package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ms2m/ms2m/internal/expect"
)

// received is a record as an app decoded it.
type received struct {
	partition int
	offset    int64
	value     string
	key       []byte
	hasKey    bool
	headers   []kafka.Header
}

// exactApp decodes what it is delivered, one message per POST or
// batches, with the helpers an app in Go uses.
type exactApp struct {
	mu       sync.Mutex
	got      []received
	problems []string
}

func (a *exactApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var recs []received
	var err error
	if r.Header.Get("Content-Type") == BatchContentType {
		recs, err = decodeBatchRequest(r)
	} else {
		recs, err = decodeMessageRequest(r)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.problems = append(a.problems, err.Error())
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a.got = append(a.got, recs...)
}

func decodeMessageRequest(r *http.Request) ([]received, error) {
	p, _ := strconv.Atoi(r.Header.Get(HeaderPartition))
	off, _ := strconv.ParseInt(r.Header.Get(HeaderOffset), 10, 64)
	var value bytes.Buffer
	if _, err := value.ReadFrom(r.Body); err != nil {
		return nil, err
	}
	key, ok, err := KeyFrom(r.Header)
	if err != nil {
		return nil, err
	}
	hs, err := HeadersFrom(r.Header)
	if err != nil {
		return nil, err
	}
	return []received{{partition: p, offset: off, value: value.String(), key: key, hasKey: ok, headers: hs}}, nil
}

func decodeBatchRequest(r *http.Request) ([]received, error) {
	var b Batch
	if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
		return nil, err
	}
	recs := make([]received, len(b.Messages))
	for i, m := range b.Messages {
		var hs []kafka.Header
		for _, h := range m.Headers {
			hs = append(hs, kafka.Header{Key: h.Name(), Value: h.Value})
		}
		recs[i] = received{partition: m.Partition, offset: m.Offset, value: string(m.Value), key: m.Key, hasKey: m.Key != nil, headers: hs}
	}
	return recs, nil
}

func (a *exactApp) snapshot() ([]received, []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]received(nil), a.got...), append([]string(nil), a.problems...)
}

// TestBinaryKeysAndHeadersReachTheAppExactly runs a live sidecar on two
// partitions and produces records whose keys, header names and header values
// are random bytes: control bytes, invalid UTF-8, leading spaces, duplicate
// names. Each reaches the app once, in order per partition, its bytes
// recovered exactly, and the sidecar never has to retry: a record HTTP
// cannot carry as-is used to be retried forever, blocking every partition.
func TestBinaryKeysAndHeadersReachTheAppExactly(t *testing.T) {
	for _, batch := range []int{1, 8} {
		t.Run("batch="+strconv.Itoa(batch), func(t *testing.T) {
			b := startBroker(t, 2)
			a := &exactApp{}
			d := deliverer(t, a)
			d.BatchSize = batch
			var errMu sync.Mutex
			var appErrs []string
			d.OnAppError = func(m kafka.Message, err error) {
				errMu.Lock()
				defer errMu.Unlock()
				appErrs = append(appErrs, fmt.Sprintf("%d@%d (key %q): %v", m.Partition, m.Offset, m.Key, err))
			}
			e := NewLive(b.sources("binary"), d)
			runEngine(t, e)

			r := rand.New(rand.NewPCG(newSeed(t), 3))
			const n = 200
			msgs := make([]kafka.Message, n)
			for i := range msgs {
				msgs[i] = randomRecord(r, false) // kafka-go reads an empty key as none
				msgs[i].Value = []byte(strconv.Itoa(i))
			}
			w := &kafka.Writer{Addr: kafka.TCP(b.addr), Topic: topic, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll}
			if err := w.WriteMessages(context.Background(), msgs...); err != nil {
				t.Fatalf("producing: %v", err)
			}
			_ = w.Close()

			ctx, cancel := context.WithTimeout(context.Background(), expect.Timeout)
			defer cancel()
			end, err := b.endOffsets(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if end[0]+end[1] != n || end[0] == 0 || end[1] == 0 {
				t.Fatalf("end offsets %v: want %d records over both partitions", end, n)
			}
			expect.Eventually(t, "every record delivered", func() error {
				errMu.Lock()
				errs := slices.Clone(appErrs)
				errMu.Unlock()
				if len(errs) > 0 {
					t.Fatalf("the sidecar had to retry %d times, first: %s", len(errs), errs[0])
				}
				got, problems := a.snapshot()
				if len(problems) > 0 {
					t.Fatalf("the app could not decode: %v", problems)
				}
				if len(got) < n {
					return fmt.Errorf("%d of %d delivered", len(got), n)
				}
				return nil
			})

			got, _ := a.snapshot()
			next := map[int]int64{}
			last := map[int]int{0: -1, 1: -1}
			seen := map[int]bool{}
			for _, g := range got {
				i, err := strconv.Atoi(g.value)
				if err != nil || i < 0 || i >= n || seen[i] {
					t.Fatalf("delivered value %q at %d@%d: not a record produced once", g.value, g.partition, g.offset)
				}
				seen[i] = true
				if g.offset != next[g.partition] || i < last[g.partition] {
					t.Fatalf("record %d delivered at %d@%d after record %d, want offset %d next", i, g.partition, g.offset, last[g.partition], next[g.partition])
				}
				next[g.partition]++
				last[g.partition] = i
				m := msgs[i]
				if g.hasKey != (m.Key != nil) || !bytes.Equal(g.key, m.Key) {
					t.Errorf("record %d: key %q arrived as %q (present: %v)", i, m.Key, g.key, g.hasKey)
				}
				if !sameHeaders(g.headers, m.Headers) {
					t.Errorf("record %d: headers %q arrived as %q", i, m.Headers, g.headers)
				}
			}
			if len(got) != n || !maps.Equal(next, end) {
				t.Fatalf("%d delivered up to %v, want %d up to %v", len(got), next, n, end)
			}

			// Nothing is stuck: a pause returns at once, at the ends.
			pos, err := e.Pause(ctx)
			if err != nil || !maps.Equal(pos.Next, end) {
				t.Fatalf("pause: %+v, %v; want next = %v", pos, err, end)
			}
		})
	}
}
