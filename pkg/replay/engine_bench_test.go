package replay

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ms2m/ms2m/internal/expect"
)

// batchSizes are the app's two choices compared by the delivery benchmarks:
// one message per POST (the default) and batches of 64 (the opt-in).
var batchSizes = []int{1, 64}

// BenchmarkLiveDelivery measures live consumption to a no-op app on one
// partition: fetch, HTTP delivery and a synchronous commit per message (or
// per batch). msg/s is the figure to compare; ns/op is per message.
func BenchmarkLiveDelivery(b *testing.B) {
	for _, n := range batchSizes {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			var acked atomic.Int64
			h := start(b, noopApp(&acked), func(d *Deliverer) { d.BatchSize = n })
			// Produce outside the timer (paused, so nothing is consumed
			// yet), in chunks the writer accepts.
			if _, err := h.engine.Pause(b.Context()); err != nil {
				b.Fatal(err)
			}
			for produced := 0; produced < b.N; produced += 1000 {
				h.b.produce(b, produced, min(1000, b.N-produced))
			}
			b.ResetTimer()
			mustResume(b, h.engine)
			expect.Eventually(b, "all delivered", func() error {
				if n := acked.Load(); n < int64(b.N) {
					return fmt.Errorf("%d of %d", n, b.N)
				}
				return nil
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
		})
	}
}

// noopApp acknowledges whatever it is sent and counts the messages, one per
// POST or a batch's worth.
func noopApp(acked *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		n := int64(1)
		if v := r.Header.Get(HeaderBatchSize); v != "" {
			n, _ = strconv.ParseInt(v, 10, 64)
		}
		_, _ = io.Copy(io.Discard, r.Body)
		acked.Add(n)
	})
}

// decodingApp decodes every batch and counts its messages.
func decodingApp(b *testing.B, acked *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var batch Batch
		if err := json.NewDecoder(r.Body).Decode(&batch); err != nil {
			b.Error(err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		acked.Add(int64(len(batch.Messages)))
	})
}

// BenchmarkReplayDelivery measures a migration target replaying from offset
// 0 to a fence at the head (no group membership, no commits) to a no-op app
// that acknowledges without decoding, and, for batches, to one that decodes
// each batch (what a real app at least does).
func BenchmarkReplayDelivery(b *testing.B) {
	type variant struct {
		name   string
		batch  int
		decode bool
	}
	variants := []variant{{"batch=1", 1, false}, {"batch=64", 64, false}, {"batch=64,decoding-app", 64, true}}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			n := v.batch
			var acked atomic.Int64
			br := startBroker(b, 1)
			for produced := 0; produced < b.N; produced += 1000 {
				br.produce(b, produced, min(1000, b.N-produced))
			}
			app := noopApp(&acked)
			if v.decode {
				app = decodingApp(b, &acked)
			}
			srv := httptest.NewServer(app)
			defer srv.Close()
			ctx, cancel := context.WithCancel(b.Context())
			defer cancel()
			// A live source processes everything and is fenced at the head
			// (outside the timer), as in a migration's Finalizing phase.
			sources := br.sources("bench-replay")
			source := NewLive(sources, &Deliverer{URL: srv.URL, Client: srv.Client(), BatchSize: 64})
			go func() { _ = source.Run(ctx) }()
			expect.Eventually(b, "source at the head", func() error {
				if n := acked.Load(); n < int64(b.N) {
					return fmt.Errorf("%d of %d", n, b.N)
				}
				return nil
			})
			fence, err := source.Fence(ctx)
			if err != nil {
				b.Fatal(err)
			}
			e := NewReplay(sources, &Deliverer{URL: srv.URL, Client: srv.Client(), BatchSize: n}, map[int]int64{0: 0})
			b.ResetTimer()
			go func() { _ = e.Run(ctx) }()
			if _, err := e.Handover(ctx, fence.Fence); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
		})
	}
}

// BenchmarkControlLatency measures pause and fence as the controller calls
// them: an authenticated POST to the control API (a static authenticator
// stands in for TokenVerifier), the sidecar live on one partition with an idle
// app. It reports p50 and p99 of the round trip.
func BenchmarkControlLatency(b *testing.B) {
	b.Run("pause", func(b *testing.B) {
		var acked atomic.Int64
		h := start(b, noopApp(&acked))
		call := benchControl(b, h.engine)
		h.b.produce(b, 0, 1)
		expectAcked(b, &acked, 1)
		expect.Eventually(b, "idle: committed", func() error {
			if next := h.engine.Position().Next[0]; next != 1 {
				return fmt.Errorf("at %d", next)
			}
			return nil
		})
		lat := make([]time.Duration, 0, b.N)
		for b.Loop() {
			t0 := time.Now()
			call("/pause")
			lat = append(lat, time.Since(t0))
			call("/resume")
		}
		reportLatency(b, lat)
	})
	b.Run("fence", func(b *testing.B) {
		// Each fence needs a live group member; the rejoin after it (the
		// rollback path: a resume never ends a fence) is outside the timer.
		var acked atomic.Int64
		h := start(b, noopApp(&acked))
		call := benchControl(b, h.engine)
		lat := make([]time.Duration, 0, b.N)
		i := 0
		for b.Loop() {
			b.StopTimer()
			h.b.produce(b, i, 1)
			i++
			expectAcked(b, &acked, int64(i)) // live in the group again
			expect.Eventually(b, "idle: committed", func() error {
				if next := h.engine.Position().Next[0]; next != int64(i) {
					return fmt.Errorf("at %d", next)
				}
				return nil
			})
			b.StartTimer()
			t0 := time.Now()
			call("/fence")
			lat = append(lat, time.Since(t0))
			b.StopTimer()
			call("/rejoin")
			b.StartTimer()
		}
		reportLatency(b, lat)
	})
}

func expectAcked(b *testing.B, acked *atomic.Int64, n int64) {
	b.Helper()
	expect.Eventually(b, "delivered", func() error {
		if got := acked.Load(); got < n {
			return fmt.Errorf("%d of %d", got, n)
		}
		return nil
	})
}

// benchControl POSTs to e's control API as the manager.
func benchControl(b *testing.B, e *Engine) func(path string) {
	call := controlServer(b, e)
	return func(path string) {
		if status, body := call(http.MethodPost, path, ""); status != http.StatusOK {
			b.Fatalf("POST %s = %d %s", path, status, body)
		}
	}
}

func reportLatency(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkPauseResume measures pause (with an idle app) then resume on a
// live engine, in process; it reports the p99 of the pause.
func BenchmarkPauseResume(b *testing.B) {
	h := start(b, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	var lat []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if _, err := h.engine.Pause(b.Context()); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
		mustResume(b, h.engine)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-pause-µs")
}

// BenchmarkDeliverOnly is the baseline for BenchmarkLiveDelivery: the HTTP
// delivery alone, without Kafka fetch and commit.
func BenchmarkDeliverOnly(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	d := &Deliverer{URL: srv.URL, Client: srv.Client(), MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond}
	m := kafka.Message{Topic: topic, Value: []byte("12345"), Headers: []kafka.Header{{Key: "seq", Value: []byte("1")}}}
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Deliver(b.Context(), m, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}
