package main

import (
	"errors"
	"slices"
	"time"
)

// gaps is what the observed records say about one migration.
type gaps struct {
	// Downtime is the longest service gap that overlaps the migration,
	// less the steady service time: how long a message that was waiting
	// waited beyond its normal turn because no instance processed live.
	Downtime time.Duration
	// MaxGap is the longest interval between two consecutive live effects
	// that overlaps the migration, idle time included (at low rates the
	// consumer is idle between messages: about 1/rate).
	MaxGap time.Duration
	// Service is the median service gap before the migration: the
	// per-message cost (process time, delivery, effect write) that every
	// message pays with or without a migration.
	Service time.Duration
	// At is when the downtime's gap ended, after the start of the move.
	At time.Duration
}

var errNoEffectAfter = errors.New("no live effect after the migration ended, yet messages are missing: the consumer never went live again")

// measure computes the gaps of a migration that ran from start to end
// (the benchmark's own clock: request sent, target live); complete says
// every produced message had its live effect, so a stream that simply
// ended during the move has no open stall at its end. A message's
// service gap is the time from when it could have been processed — when
// it was produced or when the previous live message finished, whichever is
// later — to when its effect appeared; in steady state that is one
// message's processing. Measured this way for both methods, the figure
// counts a stall as downtime only while a message was actually waiting,
// so it does not grow with the idle time between messages at low rates.
func measure(produced map[int64]time.Time, effects []stamped, start, end time.Time, complete bool) (gaps, error) {
	live := firstEffects(effects)
	var g gaps
	var before, after []time.Duration
	seenAfter := false
	for i := 1; i < len(live); i++ {
		prev, cur := live[i-1].At, live[i].At
		ready := prev
		if p, ok := produced[live[i].Seq]; ok && p.After(ready) {
			ready = p
		}
		service := max(cur.Sub(ready), 0)
		switch {
		case cur.Before(start):
			before = append(before, service)
		case ready.After(end):
			after = append(after, service)
		}
		if ready.Before(end) && cur.After(start) {
			g.MaxGap = max(g.MaxGap, cur.Sub(prev))
			if service > g.Downtime {
				g.Downtime, g.At = service, cur.Sub(start)
			}
		}
		if cur.After(end) {
			seenAfter = true
		}
	}
	if !seenAfter && !complete {
		return g, errNoEffectAfter
	}
	switch {
	case len(before) >= 3:
		g.Service = median(before)
	case len(after) > 0:
		g.Service = median(after)
	}
	g.Downtime = max(g.Downtime-g.Service, 0)
	return g, nil
}

// firstEffects keeps each sequence number's first live effect, in the
// order they appeared.
func firstEffects(effects []stamped) []stamped {
	seen := make(map[int64]bool, len(effects))
	out := make([]stamped, 0, len(effects))
	for _, e := range effects {
		if !seen[e.Seq] {
			seen[e.Seq] = true
			out = append(out, e)
		}
	}
	slices.SortStableFunc(out, func(a, b stamped) int { return a.At.Compare(b.At) })
	return out
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
