package main

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// stream builds a trial's observations: message i produced at
// produced[i] ms and its live effect at effect[i] ms (negative: none).
func stream(produced, effect []int) (map[int64]time.Time, []stamped) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	p := map[int64]time.Time{}
	var e []stamped
	for i := range produced {
		p[int64(i)] = at(produced[i])
		if effect[i] >= 0 {
			e = append(e, stamped{Seq: int64(i), At: at(effect[i])})
		}
	}
	return p, e
}

func msAt(ms int) time.Time { return time.Unix(1000, 0).Add(time.Duration(ms) * time.Millisecond) }

func TestMeasure(t *testing.T) {
	cases := []struct {
		name             string
		produced, effect []int
		start, end       int
		downtime, gap    time.Duration
		service          time.Duration
		complete         bool
		err              error
	}{{
		// Idle consumer at 10 msg/s, 20 ms per message: a move that
		// delays one message by 50 ms is 50 ms of downtime, although
		// effects are always ~100 ms apart.
		name:     "idle between messages: only the waiting counts",
		produced: []int{0, 100, 200, 300, 400, 500, 600},
		effect:   []int{20, 120, 220, 320, 470, 520, 620},
		start:    310, end: 460,
		downtime: 50 * time.Millisecond, gap: 150 * time.Millisecond, service: 20 * time.Millisecond,
	}, {
		// Backlogged consumer: messages wait anyway; the stall between
		// two effects, less one message's processing, is the downtime.
		name:     "backlogged: the stall between effects",
		produced: []int{0, 1, 2, 3, 4, 5, 6, 7},
		effect:   []int{20, 40, 60, 80, 1100, 1120, 1140, 1160},
		start:    85, end: 1090,
		downtime: 1000 * time.Millisecond, gap: 1020 * time.Millisecond, service: 20 * time.Millisecond,
	}, {
		name:     "a move without any stall has no downtime",
		produced: []int{0, 100, 200, 300, 400, 500},
		effect:   []int{20, 120, 220, 320, 420, 520},
		start:    210, end: 330,
		downtime: 0, gap: 100 * time.Millisecond, service: 20 * time.Millisecond,
	}, {
		name:     "duplicated effects count once, at their first appearance",
		produced: []int{0, 100, 200, 300, 400},
		effect:   []int{20, 120, 220, 320, 420},
		start:    110, end: 330,
		downtime: 0, gap: 100 * time.Millisecond, service: 20 * time.Millisecond,
	}, {
		name:     "no live effect after the move",
		produced: []int{0, 100, 200, 300},
		effect:   []int{20, 120, 220, -1},
		start:    230, end: 400,
		err: errNoEffectAfter,
	}, {
		name:     "the stream ended during the move: gaps up to its end",
		produced: []int{0, 100, 200, 300, 400, 500},
		effect:   []int{20, 120, 220, 320, 460, 520},
		start:    350, end: 700, complete: true,
		downtime: 40 * time.Millisecond, gap: 140 * time.Millisecond, service: 20 * time.Millisecond,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, e := stream(tc.produced, tc.effect)
			if tc.name == "duplicated effects count once, at their first appearance" {
				e = append(e, stamped{Seq: 2, At: msAt(900)})
			}
			g, err := measure(p, e, msAt(tc.start), msAt(tc.end), tc.complete)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			if g.Downtime != tc.downtime || g.MaxGap != tc.gap || g.Service != tc.service {
				t.Errorf("downtime %s, longest gap %s, service %s; want %s, %s, %s", g.Downtime, g.MaxGap, g.Service, tc.downtime, tc.gap, tc.service)
			}
		})
	}
}

func TestRecordRoundTrip(t *testing.T) {
	in := []result{{
		Rate: 60, Run: 3, Method: ms2m.Name, Downtime: 151500 * time.Microsecond, MaxGap: 175 * time.Millisecond, Service: 23400 * time.Microsecond,
		PauseStall: 150 * time.Millisecond, HandoverStall: 40 * time.Millisecond, ControllerDowntime: 61700 * time.Microsecond,
		Total: 15538900 * time.Microsecond, Replayed: 632, Input: 900, StateOK: true, Cutover: "CaughtUp",
		Phases: []span{{Name: "Pending", Duration: 2 * time.Millisecond}, {Name: "Replaying", Duration: 14611 * time.Millisecond}},
	}, {
		Rate: 10, Run: 1, Method: cold.Name, Downtime: 6215500 * time.Microsecond, Lost: 1, Duplicated: 2, Unexpected: 3,
		Phases: []span{{Name: "Stopping", Duration: 144 * time.Millisecond}}, Err: "handover at map[0:3]: sidecar answered 504, with a comma",
	}}
	for _, r := range in {
		got, err := parseRecord(r.record())
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, r)
		}
	}
}

func TestParseMicro(t *testing.T) {
	out := `goos: linux
pkg: github.com/ms2m/ms2m/pkg/replay
BenchmarkPauseResume-2   	 5000	      2100 ns/op	   1.5 p99-µs	 120 B/op	       3 allocs/op
BenchmarkPauseResume-2   	 5000	      1900 ns/op	   2.5 p99-µs	 120 B/op	       3 allocs/op
BenchmarkPauseResume-2   	 5000	      2000 ns/op	   3.5 p99-µs	 120 B/op	       3 allocs/op
--- FAIL: BenchmarkBroken-2
BenchmarkPauseResume-2   	2026/11/26 03:08:37 GET /v2/
2026/11/26 03:08:37 PUT /v2/x
    5000	      2200 ns/op	   3.0 p99-µs	 120 B/op	       3 allocs/op
pkg: github.com/ms2m/ms2m/test/bench/controller
BenchmarkPhaseTransitions-2   	      20	 217407189 ns/op	        36.23 ms/transition
PASS
`
	rs, err := parseMicro(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 {
		t.Fatalf("%d benchmarks, want 2: %+v", len(rs), rs)
	}
	if r := rs[0]; r.Name != "BenchmarkPauseResume" || r.Runs != 4 || r.Median["ns/op"] != 2050 || r.Median["p99-µs"] != 2.75 {
		t.Errorf("first: %+v", r)
	}
	table := microTable(rs)
	for _, want := range []string{"| pkg/replay | PauseResume | 2.0 µs | 120 | 3.00 | 2.75 p99-µs | 4 |", "| test/bench/controller | PhaseTransitions | 217.41 ms |"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}
