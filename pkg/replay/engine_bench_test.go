package replay

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ms2m/ms2m/pkg/expect"
)

// BenchmarkLiveDelivery measures live consumption to a no-op app on one
// partition: fetch, HTTP delivery and a synchronous commit per message.
// msg/s is the figure to compare; ns/op is per message.
func BenchmarkLiveDelivery(b *testing.B) {
	var acked atomic.Int64
	h := start(b, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { acked.Add(1) }))
	// Produce outside the timer (paused, so nothing is consumed yet), in
	// chunks the writer accepts.
	if _, err := h.engine.Pause(b.Context()); err != nil {
		b.Fatal(err)
	}
	for produced := 0; produced < b.N; produced += 1000 {
		h.b.produce(b, produced, min(1000, b.N-produced))
	}
	b.ResetTimer()
	h.engine.Resume()
	expect.Eventually(b, "all delivered", func() error {
		if n := acked.Load(); n < int64(b.N) {
			return fmt.Errorf("%d of %d", n, b.N)
		}
		return nil
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}

// BenchmarkReplayDelivery measures a migration target replaying from offset
// 0 to a fence at the head (no group membership, no commits) to a no-op app.
func BenchmarkReplayDelivery(b *testing.B) {
	var acked atomic.Int64
	br := startBroker(b)
	for produced := 0; produced < b.N; produced += 1000 {
		br.produce(b, produced, min(1000, b.N-produced))
	}
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { acked.Add(1) }))
	defer srv.Close()
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	// A live source processes everything and is fenced at the head (outside
	// the timer), as in a migration's Finalizing phase.
	sources := br.sources("bench-replay")
	source := NewLive(sources, &Deliverer{URL: srv.URL, Client: srv.Client()})
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
	e := NewReplay(sources, &Deliverer{URL: srv.URL, Client: srv.Client()}, map[int]int64{0: 0})
	b.ResetTimer()
	go func() { _ = e.Run(ctx) }()
	if _, err := e.Handover(ctx, fence.Fence); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}

// BenchmarkPauseResume measures pause (with an idle app) then resume on a
// live engine; it reports the p99 of the pause.
func BenchmarkPauseResume(b *testing.B) {
	h := start(b, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	var lat []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if _, err := h.engine.Pause(b.Context()); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
		h.engine.Resume()
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
