package main

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// microResult is one benchmark's medians over its -count runs, per unit.
type microResult struct {
	Pkg, Name string
	Units     []string
	Median    map[string]float64
	Runs      int
}

// parseMicro reads `go test -bench` output (several packages, -count N)
// into medians per benchmark and unit, in the order they first appear.
func parseMicro(r io.Reader) ([]microResult, error) {
	var out []*microResult
	byKey := map[string]*microResult{}
	values := map[string]map[string][]float64{}
	pkg, pending := "", ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg, pending = strings.TrimSpace(p), ""
			continue
		}
		f := strings.Fields(line)
		if len(f) >= 1 && strings.HasPrefix(f[0], "Benchmark") && (len(f) < 2 || !isInt(f[1])) {
			// The benchmark's own log output split its result line: the
			// figures follow on a later line of their own.
			pending = f[0]
			continue
		}
		if len(f) >= 3 && pending != "" && isInt(f[0]) && slices.Contains(f, "ns/op") {
			f = append([]string{pending}, f...)
		}
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || !isInt(f[1]) {
			continue
		}
		pending = ""
		name := f[0]
		if i := strings.LastIndex(name, "-"); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		key := pkg + " " + name
		m := byKey[key]
		if m == nil {
			m = &microResult{Pkg: pkg, Name: name, Median: map[string]float64{}}
			byKey[key] = m
			values[key] = map[string][]float64{}
			out = append(out, m)
		}
		m.Runs++
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			unit := f[i+1]
			if !slices.Contains(m.Units, unit) {
				m.Units = append(m.Units, unit)
			}
			values[key][unit] = append(values[key][unit], v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	res := make([]microResult, len(out))
	for i, m := range out {
		for unit, v := range values[m.Pkg+" "+m.Name] {
			slices.Sort(v)
			if len(v)%2 == 1 {
				m.Median[unit] = v[len(v)/2]
			} else {
				m.Median[unit] = (v[len(v)/2-1] + v[len(v)/2]) / 2
			}
		}
		res[i] = *m
	}
	return res, nil
}

// microTable renders the medians as Markdown: time per op, allocations,
// and every custom metric the benchmark reports.
func microTable(rs []microResult) string {
	var b strings.Builder
	b.WriteString("| package | benchmark | time/op | B/op | allocs/op | reported | runs |\n|---|---|---:|---:|---:|---|---:|\n")
	for _, r := range rs {
		var extra []string
		for _, u := range r.Units {
			if u != "ns/op" && u != "B/op" && u != "allocs/op" {
				extra = append(extra, fmt.Sprintf("%s %s", num(r.Median[u]), u))
			}
		}
		get := func(u string) string {
			if !slices.Contains(r.Units, u) {
				return "—"
			}
			return num(r.Median[u])
		}
		t := "—"
		if slices.Contains(r.Units, "ns/op") {
			t = nsString(r.Median["ns/op"])
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %d |\n", strings.TrimPrefix(r.Pkg, "github.com/ms2m/ms2m/"),
			strings.TrimPrefix(r.Name, "Benchmark"), t, get("B/op"), get("allocs/op"), strings.Join(extra, ", "), r.Runs)
	}
	return b.String()
}

func nsString(ns float64) string {
	switch {
	case ns >= 1e9:
		return fmt.Sprintf("%.2f s", ns/1e9)
	case ns >= 1e6:
		return fmt.Sprintf("%.2f ms", ns/1e6)
	case ns >= 1e3:
		return fmt.Sprintf("%.1f µs", ns/1e3)
	default:
		return fmt.Sprintf("%.0f ns", ns)
	}
}

func num(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func isInt(s string) bool {
	_, err := strconv.Atoi(s)
	return err == nil
}
