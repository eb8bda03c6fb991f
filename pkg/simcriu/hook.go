package simcriu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

const (
	// EnvHook names the unix socket on which a process serves its memory
	// dump to the simulated runtime. Only the runtime sets it.
	EnvHook = "MS2M_SIMCRIU_HOOK"
	// EnvRestore names the memory image a restored process starts from.
	EnvRestore = "MS2M_SIMCRIU_RESTORE"

	dumpPath = "/dump"
)

// DumpFunc returns the process's memory state. It must be consistent: the
// state after some whole number of operations, never half of one (CRIU
// freezes the process; the simulation relies on the app to hold its lock).
type DumpFunc func() ([]byte, error)

// ServeHook serves dump on the socket the simulated runtime named in
// EnvHook, until ctx ends. Without EnvHook (a real cluster, or a process
// not started by the sandbox) it returns nil at once: nothing to serve.
func ServeHook(ctx context.Context, dump DumpFunc) error {
	path := os.Getenv(EnvHook)
	if path == "" {
		return nil
	}
	_ = os.Remove(path) // a stale socket from a previous run of this container
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("simulated CRIU hook %s=%s: %w", EnvHook, path, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+dumpPath, func(w http.ResponseWriter, _ *http.Request) {
		b, err := dump()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(b)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// RestoredState returns the memory image the process was restored from, and
// false when it was started fresh.
func RestoredState() ([]byte, bool, error) {
	path := os.Getenv(EnvRestore)
	if path == "" {
		return nil, false, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, false, fmt.Errorf("simulated CRIU restore %s=%s: %w", EnvRestore, path, err)
	}
	return b, true, nil
}

// ErrNoHook means the process does not serve the simulated CRIU hook, so it
// cannot be checkpointed in the sandbox.
var ErrNoHook = errors.New("process does not serve the simulated CRIU hook (" + EnvHook + ")")

// Dump asks the process listening on socket for its memory state: the
// simulated runtime's half of the hook.
func Dump(ctx context.Context, socket string) ([]byte, error) {
	if _, err := os.Stat(socket); err != nil {
		return nil, ErrNoHook
	}
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		},
	}}
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://simcriu"+dumpPath, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("simulated CRIU dump: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("simulated CRIU dump: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("simulated CRIU dump: the process answered %s: %s", resp.Status, b)
	}
	return b, nil
}
