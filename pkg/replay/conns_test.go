package replay

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/ms2m/ms2m/pkg/procnet"
)

// slowCloser is an app whose server closes its end of a connection
// delay after it reads the client's close, as a busy app does.
func slowCloser(t *testing.T, delay time.Duration) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				r := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(r)
					if err != nil {
						time.Sleep(delay) //nolint:forbidigo // the app's slowness is what is modelled, not a synchronisation
						_ = c.Close()
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
				}
			}()
		}
	}()
	return l.Addr().String()
}

// appHolds lists the app's ends of connections from the sidecar's side
// that CRIU would refuse (ESTABLISHED, CLOSE_WAIT).
func appHolds(t *testing.T, app string) []procnet.Socket {
	t.Helper()
	socks, err := procnet.Read("/proc/self/net")
	if err != nil {
		t.Skipf("no TCP table: %v", err)
	}
	var out []procnet.Socket
	for _, s := range socks {
		if s.Local == app && (s.State == procnet.Established || s.State == procnet.CloseWait) {
			out = append(out, s)
		}
	}
	return out
}

// The sidecar's own connections never make CRIU refuse the checkpoint:
// when a pause's quiesce returns, the app has closed its end of every
// connection the sidecar kept to it, even an app slow to notice.
func TestTheSidecarsConnectionsAreClosedOnBothEndsBeforeTheCheckpoint(t *testing.T) {
	for _, tracked := range []bool{true, false} {
		// Without the wait (the control: this test can fail), an app
		// slower than any scheduling delay of the test; with it, one
		// slower than a scheduler's tick and well within QuiesceWait.
		app := slowCloser(t, map[bool]time.Duration{true: 100 * time.Millisecond, false: 3 * time.Second}[tracked])
		client, conns := NewAppClient(5 * time.Second)
		d := &Deliverer{URL: "http://" + app + "/messages", Client: client}
		if tracked {
			d.Conns = conns
		}
		for range 3 { // a keep-alive connection, reused
			resp, err := client.Post(d.URL, "text/plain", nil)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
		}
		if len(appHolds(t, app)) == 0 {
			t.Fatal("no connection to the app to close")
		}
		if err := d.Quiesce(context.Background()); err != nil {
			t.Fatal(err)
		}
		held := appHolds(t, app)
		if tracked && len(held) > 0 {
			t.Fatalf("after the quiesce the app still holds %v: CRIU would refuse the checkpoint", held)
		}
		if !tracked && len(held) == 0 {
			t.Fatal("without the wait the app's end should still be open; the test shows nothing")
		}
	}
}

// Outside a quiesce the tracker remembers no closed connection: a sidecar
// that runs for months must not grow with every connection it closed.
func TestTheTrackerForgetsConnectionsClosedOutsideAQuiesce(t *testing.T) {
	app := slowCloser(t, 0)
	client, conns := NewAppClient(5 * time.Second)
	for range 5 {
		resp, err := client.Post("http://"+app+"/messages", "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		client.CloseIdleConnections()
	}
	conns.mu.Lock()
	defer conns.mu.Unlock()
	if len(conns.closed) != 0 || len(conns.open) != 0 {
		t.Fatalf("tracker holds %d closed and %d open connections; want none", len(conns.closed), len(conns.open))
	}
}
