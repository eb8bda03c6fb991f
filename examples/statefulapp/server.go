package statefulapp

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ms2m/ms2m/pkg/replay"
)

// Server is the consumer's HTTP side: the replay sidecar POSTs each message
// to /messages; /state shows the digest and counters.
type Server struct {
	State *State
	// ProcessTime is spent per message, standing in for real work;
	// ReplayProcessTime, when set, per replayed message instead (an app
	// whose rebuild costs more than its live work).
	ProcessTime, ReplayProcessTime time.Duration
	// Effects, when set, receives one record per live message.
	Effects *EffectWriter
	// HTTP, when set, is the server serving Handler: a quiesce closes its
	// idle keep-alive connections (a client such as a metrics scraper or
	// a test keeps them open) and serves without keep-alive until the next
	// message.
	HTTP interface{ SetKeepAlivesEnabled(bool) }

	quiesced atomic.Bool
	// effectsWarm: the effects writer was (re)connected since the process
	// started or last quiesced.
	effectsWarm atomic.Bool
	warming     sync.Mutex
}

// Handler serves /messages, /state and /healthz.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /messages", s.message)
	mux.HandleFunc("GET /state", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.State.Summary())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	// The sidecar's word that the container is checkpointed next: no TCP
	// connection may be open (replay.QuiescePath).
	mux.HandleFunc("POST "+replay.QuiescePath, func(w http.ResponseWriter, _ *http.Request) {
		if s.Effects != nil {
			s.warming.Lock()
			s.Effects.CloseConnections()
			s.effectsWarm.Store(false)
			s.warming.Unlock()
		}
		if s.HTTP != nil {
			s.quiesced.Store(true)
			s.HTTP.SetKeepAlivesEnabled(false) // closes the idle ones now
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

func (s *Server) message(w http.ResponseWriter, req *http.Request) {
	if s.HTTP != nil && s.quiesced.CompareAndSwap(true, false) {
		s.HTTP.SetKeepAlivesEnabled(true) // deliveries resumed
	}
	if s.Effects != nil && s.effectsWarm.CompareAndSwap(false, true) {
		// The effects writer reconnects while this message is processed
		// (after a resume) or replayed (on a restored target), not within
		// the first live effect's write, inside the migration's stall.
		// A quiesce waits for it: no connection may open behind it.
		s.warming.Lock()
		go func() {
			defer s.warming.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = s.Effects.Warm(ctx)
		}()
	}
	partition, err1 := strconv.Atoi(req.Header.Get(replay.HeaderPartition))
	offset, err2 := strconv.ParseInt(req.Header.Get(replay.HeaderOffset), 10, 64)
	if err1 != nil || err2 != nil {
		http.Error(w, "missing or malformed "+replay.HeaderPartition+"/"+replay.HeaderOffset+" header", http.StatusBadRequest)
		return
	}
	var body [32]byte
	n, _ := req.Body.Read(body[:])
	seq, err := ParseSeq(body[:n])
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	// A key that is not plain text arrives base64 in another header:
	// KeyFrom returns its bytes either way.
	key, _, err := replay.KeyFrom(req.Header)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r := Record{Partition: partition, Offset: offset, Key: string(key), Seq: seq}
	if v := req.Header.Get(replay.HeaderPreviousOffset); v != "" {
		prev, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			http.Error(w, "malformed "+replay.HeaderPreviousOffset+" header", http.StatusBadRequest)
			return
		}
		r.Previous = &prev
	}
	isReplay := req.Header.Get(replay.HeaderReplay) == "true"
	cost := s.ProcessTime
	if isReplay && s.ReplayProcessTime > 0 {
		cost = s.ReplayProcessTime
	}
	if cost > 0 {
		time.Sleep(cost) // the simulated cost of processing one message
	}
	var effect func(Record) error
	if s.Effects != nil {
		effect = func(r Record) error {
			// Not cancelled with the request: a sidecar that dies while
			// the effect is being written (its connection closes) would
			// otherwise abort a write that may already have landed, leave
			// the state behind it, and have the redelivered message emit
			// the effect a second time.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(req.Context()), 10*time.Second)
			defer cancel()
			return s.Effects.Write(ctx, r)
		}
	}
	if _, err := s.State.Apply(r, isReplay, effect); err != nil {
		if behind, ok := errors.AsType[*BehindError](err); ok {
			// Restarted from the checkpoint image: ask for what was lost.
			w.Header().Set(replay.HeaderNextOffset, strconv.FormatInt(behind.Next, 10))
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
