package replay

import (
	"fmt"
	"net/http"
	"net/http/httptest"
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
