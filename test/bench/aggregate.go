package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// cell is every run of one method at one rate.
type cell struct {
	Rate   float64
	Method string
	// OK are the runs that completed; Failed those that did not.
	OK     []result
	Failed []result
}

// stat is the median and range of a figure over a cell's runs.
type stat struct{ Median, Min, Max time.Duration }

func statOf(rs []result, f func(result) time.Duration) stat {
	if len(rs) == 0 {
		return stat{}
	}
	d := make([]time.Duration, len(rs))
	for i, r := range rs {
		d[i] = f(r)
	}
	return stat{Median: median(d), Min: slices.Min(d), Max: slices.Max(d)}
}

func (c cell) stat(f func(result) time.Duration) stat { return statOf(c.OK, f) }

// phase is the median of one phase over the runs that had it.
func (c cell) phase(name string) (time.Duration, bool) {
	var d []time.Duration
	for _, r := range c.OK {
		for _, s := range r.Phases {
			if s.Name == name {
				d = append(d, s.Duration)
			}
		}
	}
	return median(d), len(d) > 0
}

// sum adds up a count over every run, failed ones included.
func (c cell) sum(f func(result) int) int {
	n := 0
	for _, r := range append(slices.Clone(c.OK), c.Failed...) {
		n += f(r)
	}
	return n
}

// converged reports whether every completed MS2M run's replay caught up
// (rather than being cut off).
func (c cell) converged() bool {
	for _, r := range c.OK {
		if r.Cutover != "CaughtUp" {
			return false
		}
	}
	return len(c.OK) > 0
}

// cutovers names why the cell's replays ended, e.g. "CaughtUp",
// "ReplayCutoff ×2, CaughtUp ×1".
func (c cell) cutovers() string {
	n := map[string]int{}
	var order []string
	for _, r := range c.OK {
		if n[r.Cutover] == 0 {
			order = append(order, r.Cutover)
		}
		n[r.Cutover]++
	}
	if len(order) == 1 {
		return order[0]
	}
	parts := make([]string, len(order))
	for i, k := range order {
		parts[i] = fmt.Sprintf("%s ×%d", k, n[k])
	}
	return strings.Join(parts, ", ")
}

// medianReplayed is the median count of replayed messages.
func (c cell) medianReplayed() int64 {
	if len(c.OK) == 0 {
		return 0
	}
	v := make([]int64, len(c.OK))
	for i, r := range c.OK {
		v[i] = r.Replayed
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// table groups results by rate (ascending) and method.
type table struct {
	Rates []float64
	cells map[float64]map[string]*cell
}

func tabulate(rs []result) table {
	t := table{cells: map[float64]map[string]*cell{}}
	for _, r := range rs {
		byMethod := t.cells[r.Rate]
		if byMethod == nil {
			byMethod = map[string]*cell{}
			t.cells[r.Rate] = byMethod
			t.Rates = append(t.Rates, r.Rate)
		}
		c := byMethod[r.Method]
		if c == nil {
			c = &cell{Rate: r.Rate, Method: r.Method}
			byMethod[r.Method] = c
		}
		if r.Err != "" {
			c.Failed = append(c.Failed, r)
		} else {
			c.OK = append(c.OK, r)
		}
	}
	slices.Sort(t.Rates)
	return t
}

// cell is the cell of rate and method; an empty one when there is none.
func (t table) cell(rate float64, method string) cell {
	if c := t.cells[rate][method]; c != nil {
		return *c
	}
	return cell{Rate: rate, Method: method}
}

// ratio is a/b, or 0 when b is zero.
func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
