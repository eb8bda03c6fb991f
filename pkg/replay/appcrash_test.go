package replay

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ms2m/ms2m/internal/expect"
	"github.com/ms2m/ms2m/internal/testenv"
)

// TestAppCrashLosesNothing stops the app (its port refuses connections) with
// messages pending, then starts a new app process on the same address: every
// message reaches it, in order, none twice, and nothing was committed that
// the app did not acknowledge.
func TestAppCrashLosesNothing(t *testing.T) {
	b := startBroker(t, 1)
	addr := testenv.FreeAddr(t)
	a := newApp()
	serve := func() *http.Server {
		var l net.Listener
		expect.Eventually(t, "app port bound", func() (err error) {
			l, err = net.Listen("tcp", addr)
			return err
		})
		s := &http.Server{Handler: a, ReadHeaderTimeout: time.Second}
		go func() { _ = s.Serve(l) }()
		return s
	}
	app := serve()

	var appErrors atomic.Int64
	d := &Deliverer{URL: "http://" + addr + "/messages", Client: &http.Client{Timeout: time.Second},
		MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		OnAppError: func(kafka.Message, error) { appErrors.Add(1) }}
	e := NewLive(b.sources("crash"), d)
	runEngine(t, e)
	b.produce(t, 0, 10)
	expectExactly(t, a, 10)

	// Crash: the process is gone, its port refuses connections.
	_ = app.Close()
	b.produce(t, 10, 10)
	expect.Eventually(t, "the sidecar notices the crash", func() error {
		if appErrors.Load() == 0 {
			return fmt.Errorf("no failed delivery yet")
		}
		return nil
	})
	if got := b.committed(t, "crash"); got != 10 {
		t.Fatalf("committed %d while the app was down; want 10 (only what it acknowledged)", got)
	}

	// The app restarts (its state rebuilt from its own store in real life;
	// here the recorder survives) and everything pending arrives once.
	app = serve()
	t.Cleanup(func() { _ = app.Shutdown(context.Background()) })
	expectExactly(t, a, 20)
}
