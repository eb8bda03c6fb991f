package replay

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// openConns tracks the server side of an app's connections.
type openConns struct {
	mu   sync.Mutex
	open map[net.Conn]bool
}

func (o *openConns) track(c net.Conn, s http.ConnState) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch s {
	case http.StateNew:
		o.open[c] = true
	case http.StateClosed, http.StateHijacked:
		delete(o.open, c)
	}
}

func (o *openConns) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.open)
}

// A pause leaves no connection between the sidecar and the app (CRIU
// refuses to checkpoint the app's container while one is open), and tells
// the app only when it opted in: an app serving every path with one
// handler would take the POST for a message.
func TestQuiesceLeavesNoConnectionToTheApp(t *testing.T) {
	for _, optIn := range []bool{false, true} {
		var messages, quiesces atomic.Int32
		conns := &openConns{open: map[net.Conn]bool{}}
		app := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == QuiescePath {
				quiesces.Add(1)
			} else {
				messages.Add(1) // a catch-all handler
			}
			w.WriteHeader(http.StatusNoContent)
		}))
		app.Config.ConnState = conns.track
		app.Start()
		d := &Deliverer{URL: app.URL + "/messages", Client: &http.Client{}}
		if optIn {
			d.QuiesceURL = app.URL + QuiescePath
		}
		ctx := context.Background()
		for i := range 3 {
			if err := d.Deliver(ctx, kafka.Message{Topic: "t", Offset: int64(i), Value: []byte("x")}, false); err != nil {
				t.Fatal(err)
			}
		}
		if conns.count() == 0 {
			t.Fatal("the sidecar keeps no connection to the app between messages: nothing to check")
		}
		if err := d.Quiesce(ctx); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for conns.count() > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("opt-in %v: %d connections to the app still open after the pause", optIn, conns.count())
			}
			time.Sleep(5 * time.Millisecond)
		}
		want := int32(0)
		if optIn {
			want = 1
		}
		if quiesces.Load() != want || messages.Load() != 3 {
			t.Errorf("opt-in %v: the app was told %d times (want %d) and got %d messages (want 3)", optIn, quiesces.Load(), want, messages.Load())
		}
		app.Close()
	}
}
