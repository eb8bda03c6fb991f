package replay

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/ms2m/ms2m/pkg/procnet"
)

// ConnTracker remembers the sidecar's connections to the app, so that a
// pause can wait until the app has closed its end of the ones it closed:
// the app's end of a connection the sidecar closed stays ESTABLISHED, then
// CLOSE_WAIT, until the app's server reads the close, and CRIU refuses to
// checkpoint a process holding such a socket ("Connected TCP socket").
// Without the wait the kubelet's checkpoint could fail for the sidecar's
// own connections, and be tried again inside the pause.
type ConnTracker struct {
	mu   sync.Mutex
	open map[*trackedConn]struct{}
	// closed are the connections closed since record, while recording
	// (during a quiesce only: a long-lived sidecar must not remember
	// every connection it ever closed).
	recording bool
	closed    []connPair
}

// connPair is a connection as the sidecar sees it.
type connPair struct{ local, remote string }

// NewAppClient is the sidecar's HTTP client to the app, its connections
// tracked.
func NewAppClient(timeout time.Duration) (*http.Client, *ConnTracker) {
	t := &ConnTracker{open: map[*trackedConn]struct{}{}}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc := &trackedConn{Conn: c, t: t}
		t.mu.Lock()
		t.open[tc] = struct{}{}
		t.mu.Unlock()
		return tc, nil
	}
	return &http.Client{Timeout: timeout, Transport: tr}, t
}

type trackedConn struct {
	net.Conn
	t    *ConnTracker
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		defer c.t.mu.Unlock()
		delete(c.t.open, c)
		if c.t.recording {
			c.t.closed = append(c.t.closed, connPair{local: c.LocalAddr().String(), remote: c.RemoteAddr().String()})
		}
	})
	return c.Conn.Close()
}

// record starts remembering the connections that close.
func (t *ConnTracker) record() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.recording, t.closed = true, nil
}

// takeClosed stops remembering and returns the connections closed since
// record.
func (t *ConnTracker) takeClosed() []connPair {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := t.closed
	t.recording, t.closed = false, nil
	return out
}

// QuiesceWait bounds how long a pause waits for the app to close its end
// of the sidecar's connections.
const QuiesceWait = 250 * time.Millisecond

// procNet is where the sidecar reads its network namespace's TCP tables
// (the pod's: the app's sockets are in it).
var procNet = "/proc/self/net"

// waitAppClosed waits, up to QuiesceWait, until the app holds no socket of
// the connections in pairs: its end is gone, or past CLOSE_WAIT (it closed
// its descriptor). It reports the connections still held when it gave up.
func waitAppClosed(ctx context.Context, pairs []connPair) []connPair {
	if len(pairs) == 0 {
		return nil
	}
	deadline := time.Now().Add(QuiesceWait)
	for {
		socks, err := procnet.Read(procNet)
		if err != nil {
			return nil // no TCP table to read (not Linux): nothing to wait on
		}
		held := map[connPair]bool{}
		for _, s := range socks {
			if s.State == procnet.Established || s.State == procnet.CloseWait {
				held[connPair{local: s.Remote, remote: s.Local}] = true // the app's end, seen from the sidecar
			}
		}
		var still []connPair
		for _, p := range pairs {
			if held[p] {
				still = append(still, p)
			}
		}
		if len(still) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return still
		}
		t := time.NewTimer(2 * time.Millisecond) // the kernel gives no event for a peer's close
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}
