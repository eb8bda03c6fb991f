package main

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// result is one trial: one move of the consumer by one method at one rate.
type result struct {
	Rate   float64
	Run    int
	Method string
	// Downtime, MaxGap and Service are measured from the observed records
	// (see measure), the same way for both methods.
	Downtime, MaxGap, Service time.Duration
	// PauseStall and HandoverStall split MS2M's downtime: the longest
	// stall while the source was paused for the checkpoint, and the
	// longest from the fence to Completed.
	PauseStall, HandoverStall time.Duration
	// ControllerDowntime is the StatefulMigration's status.downtime (MS2M,
	// stop-and-copy).
	ControllerDowntime time.Duration
	// Total is from the request (migration created, source deleted) to
	// the consumer live again.
	Total  time.Duration
	Phases []span
	// Replayed is what the final consumer replayed (its /state counter).
	Replayed int64
	// Input messages; Lost, Duplicated and Unexpected live effects.
	Input                        int
	Lost, Duplicated, Unexpected int
	StateOK                      bool
	// Cutover is the replay's end (MS2M): CaughtUp or ReplayCutoffReached.
	Cutover string
	Err     string
	// Frozen is how long the runtime held the source's app container for
	// the checkpoint, by its cgroup (MS2M; 0 if the agent did not see it).
	Frozen time.Duration
	// handedOver is the HandedOver condition's message, checkpoint the
	// agent's report of the pause's steps (logged only).
	handedOver, checkpoint string
	// downtimeAt is when the downtime ended, after the start (logged only).
	downtimeAt time.Duration
}

func (r result) String() string {
	if r.Err != "" {
		return fmt.Sprintf("rate %g run %d %-4s FAILED: %s", r.Rate, r.Run, r.Method, r.Err)
	}
	s := fmt.Sprintf("rate %g run %d %-4s downtime %s (longest gap %s, service %s), total %s, replayed %d, lost %d, duplicated %d, state ok %t",
		r.Rate, r.Run, r.Method, ms(r.Downtime), ms(r.MaxGap), ms(r.Service), ms(r.Total), r.Replayed, r.Lost, r.Duplicated, r.StateOK)
	switch {
	case isMS2M(r.Method):
		s += fmt.Sprintf(", checkpoint pause %s, handover %s, controller downtime %s, %s", ms(r.PauseStall), ms(r.HandoverStall), ms(r.ControllerDowntime), r.Cutover)
		if r.handedOver != "" {
			s += " [" + r.handedOver + "]"
		}
		if r.checkpoint != "" {
			s += " [checkpoint: " + r.checkpoint + "]"
		}
	case r.Method == stopAndCopy.Name:
		s += fmt.Sprintf(", controller downtime %s", ms(r.ControllerDowntime))
	}
	var phases []string
	for _, p := range r.Phases {
		phases = append(phases, p.Name+" "+ms(p.Duration))
	}
	s += fmt.Sprintf("; downtime ended at +%s; %s", ms(r.downtimeAt), strings.Join(phases, ", "))
	return s
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + " ms"
}

// phaseColumns are the phases of both methods, in order.
var phaseColumns = []string{"Pending", "Checkpointing", "Transferring", "Restoring", "Replaying", "Finalizing", "Stopping", "Starting", "Rebuilding"}

var header = append([]string{"rate", "run", "method", "downtime_ms", "max_gap_ms", "service_ms", "controller_downtime_ms", "checkpoint_pause_ms", "handover_ms", "total_ms",
	"replayed", "input", "lost", "duplicated", "unexpected", "state_ok", "cutover"}, append(phaseMSColumns(), "frozen_ms", "error")...)

func phaseMSColumns() []string {
	var out []string
	for _, p := range phaseColumns {
		out = append(out, strings.ToLower(p)+"_ms")
	}
	return out
}

func msField(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64)
}

func (r result) record() []string {
	rec := []string{strconv.FormatFloat(r.Rate, 'g', -1, 64), strconv.Itoa(r.Run), r.Method,
		msField(r.Downtime), msField(r.MaxGap), msField(r.Service), "", "", "", msField(r.Total),
		strconv.FormatInt(r.Replayed, 10), strconv.Itoa(r.Input), strconv.Itoa(r.Lost), strconv.Itoa(r.Duplicated), strconv.Itoa(r.Unexpected),
		strconv.FormatBool(r.StateOK), r.Cutover}
	switch {
	case isMS2M(r.Method):
		rec[6], rec[7], rec[8] = msField(r.ControllerDowntime), msField(r.PauseStall), msField(r.HandoverStall)
	case r.Method == stopAndCopy.Name:
		rec[6] = msField(r.ControllerDowntime)
	}
	for _, p := range phaseColumns {
		v := ""
		for _, s := range r.Phases {
			if s.Name == p {
				v = msField(s.Duration)
			}
		}
		rec = append(rec, v)
	}
	frozen := ""
	if r.Frozen > 0 {
		frozen = msField(r.Frozen)
	}
	return append(rec, frozen, r.Err)
}

func parseRecord(rec []string) (result, error) {
	if len(rec) == len(header)-1 { // a CSV from before frozen_ms
		rec = append(rec[:len(rec)-1:len(rec)-1], "", rec[len(rec)-1])
	}
	if len(rec) != len(header) {
		return result{}, fmt.Errorf("%d fields, want %d", len(rec), len(header))
	}
	var errs []error
	f := func(i int) float64 {
		if rec[i] == "" {
			return 0
		}
		v, err := strconv.ParseFloat(rec[i], 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", header[i], err))
		}
		return v
	}
	d := func(i int) time.Duration { return time.Duration(f(i) * float64(time.Millisecond)) }
	r := result{Rate: f(0), Run: int(f(1)), Method: rec[2], Downtime: d(3), MaxGap: d(4), Service: d(5), ControllerDowntime: d(6),
		PauseStall: d(7), HandoverStall: d(8),
		Total: d(9), Replayed: int64(f(10)), Input: int(f(11)), Lost: int(f(12)), Duplicated: int(f(13)), Unexpected: int(f(14)),
		StateOK: rec[15] == "true", Cutover: rec[16], Frozen: d(len(rec) - 2), Err: rec[len(rec)-1]}
	const firstPhase = 17
	for i, p := range phaseColumns {
		if rec[firstPhase+i] != "" {
			r.Phases = append(r.Phases, span{Name: p, Duration: d(firstPhase + i)})
		}
	}
	return r, errors.Join(errs...)
}

// csvWriter writes results as they come, flushing each.
type csvWriter struct {
	f *os.File
	w *csv.Writer
}

func newCSV(path string) (*csvWriter, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	c := &csvWriter{f: f, w: csv.NewWriter(f)}
	return c, c.write(header)
}

func (c *csvWriter) Write(r result) error { return c.write(r.record()) }

func (c *csvWriter) write(rec []string) error {
	if err := c.w.Write(rec); err != nil {
		return err
	}
	c.w.Flush()
	return c.w.Error()
}

func (c *csvWriter) Close() error { return c.f.Close() }

func readCSV(path string) ([]result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	rd := csv.NewReader(f)
	var out []result
	for line := 1; ; line++ {
		rec, err := rd.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if line == 1 {
			continue
		}
		r, err := parseRecord(rec)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		out = append(out, r)
	}
}
