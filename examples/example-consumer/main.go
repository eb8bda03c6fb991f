// Command example-consumer is the example stateful workload: its per-key
// state lives only in memory, built from the message sequence the replay
// sidecar delivers. See examples/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ms2m/ms2m/examples/statefulapp"
	"github.com/ms2m/ms2m/pkg/replay"
	"github.com/ms2m/ms2m/pkg/simcriu"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "example-consumer:", err)
		os.Exit(1)
	}
}

// ballast is memory held for the process's lifetime (--ballast-mib).
var ballast []byte

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func run() error {
	host := env("POD_IP", "127.0.0.1")
	port := flag.String("port", env("APP_PORT", "8080"), "HTTP port the sidecar delivers to (env APP_PORT); bound on $POD_IP.")
	processTime := flag.Duration("process-time", 0, "Time spent per message, standing in for real work (env PROCESS_TIME).")
	replayProcessTime := flag.Duration("replay-process-time", 0, "Time spent per replayed message instead, when set (env REPLAY_PROCESS_TIME): an app whose rebuild costs more than its live work.")
	effectsBrokers := flag.String("effects-brokers", os.Getenv("EFFECTS_BROKERS"), "Brokers of the effects topic (env EFFECTS_BROKERS).")
	effectsTopic := flag.String("effects-topic", os.Getenv("EFFECTS_TOPIC"), "Topic receiving one record per live-processed message (env EFFECTS_TOPIC); empty: none.")
	holdConn := flag.Bool("hold-idle-connection", os.Getenv("HOLD_IDLE_CONNECTION") == "true",
		"Test aid: keep one TCP connection to the app's own port open for good, ignoring "+replay.QuiescePath+
			", as an app that does not follow the app contract (env HOLD_IDLE_CONNECTION=true). Its checkpoint is refused unless the node's CRIU configuration has tcp-close.")
	ballastMiB := flag.Int("ballast-mib", 0, "Test aid: hold this many MiB of touched memory, standing in for a large state (env BALLAST_MIB): the checkpoint copies it.")
	flag.Parse()
	if v := os.Getenv("BALLAST_MIB"); v != "" && *ballastMiB == 0 {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("BALLAST_MIB=%q: want a number of MiB", v)
		}
		*ballastMiB = n
	}
	// Random bytes: resident, and no more compressible than real state.
	ballast = make([]byte, *ballastMiB<<20)
	_, _ = rand.NewChaCha8([32]byte{}).Read(ballast)
	for name, d := range map[string]*time.Duration{"PROCESS_TIME": processTime, "REPLAY_PROCESS_TIME": replayProcessTime} {
		if v := os.Getenv(name); v != "" && *d == 0 {
			parsed, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("%s=%q: %w", name, v, err)
			}
			*d = parsed
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	srv := &statefulapp.Server{State: statefulapp.NewState(), ProcessTime: *processTime, ReplayProcessTime: *replayProcessTime}
	if mem, restored, err := simcriu.RestoredState(); err != nil {
		return err
	} else if restored {
		if err := srv.State.Restore(mem); err != nil {
			return err
		}
		s := srv.State.Summary()
		log.Printf("restored from a (simulated CRIU) checkpoint: digest %s, positions %v", s.Digest[:12], s.Positions)
	}
	if *effectsTopic != "" {
		if *effectsBrokers == "" {
			return errors.New("--effects-topic needs --effects-brokers (env EFFECTS_BROKERS)")
		}
		srv.Effects = statefulapp.NewEffectWriter(strings.Split(*effectsBrokers, ","), *effectsTopic)
		defer func() { _ = srv.Effects.Close() }()
	}
	go func() {
		if err := simcriu.ServeHook(ctx, srv.State.Snapshot); err != nil {
			log.Print(err)
		}
	}()

	l, err := net.Listen("tcp", net.JoinHostPort(host, *port))
	if err != nil {
		return err
	}
	if *holdConn {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			return fmt.Errorf("--hold-idle-connection: %w", err)
		}
		defer func() { _ = c.Close() }()
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 5 * time.Second}
	srv.HTTP = hs
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	log.Printf("serving on %s (process time %s)", l.Addr(), *processTime)
	if err := hs.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
