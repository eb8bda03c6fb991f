package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// runDesc describes a run: the machine and the settings, stored next to
// the CSV so the page can be regenerated from the two.
type runDesc struct {
	Started      time.Time `json:"started"`
	Finished     time.Time `json:"finished,omitzero"`
	CPUs         int       `json:"cpus"`
	CPUModel     string    `json:"cpuModel"`
	MemoryGiB    float64   `json:"memoryGiB"`
	Kernel       string    `json:"kernel"`
	GoVersion    string    `json:"goVersion"`
	LoadBefore   string    `json:"loadBefore"`
	LoadAfter    string    `json:"loadAfter,omitempty"`
	Rates        []float64 `json:"rates"`
	Runs         int       `json:"runs"`
	ProcessTime  string    `json:"processTime"`
	Duration     string    `json:"duration"`
	Warmup       string    `json:"warmup"`
	ReplayCutoff string    `json:"replayCutoff"`
	CutoffRegime string    `json:"cutoffRegime,omitempty"`
	CutoffRates  []float64 `json:"cutoffRates,omitempty"`
	RegimeReplay string    `json:"regimeReplayProcessTime,omitempty"`
}

func describe(o Options) *runDesc {
	d := &runDesc{
		Started: time.Now(), CPUs: runtime.NumCPU(), CPUModel: cpuModel(), MemoryGiB: memoryGiB(),
		Kernel: kernel(), GoVersion: runtime.Version(), LoadBefore: loadAverage(),
		Rates: o.Rates, Runs: o.Runs, ProcessTime: o.ProcessTime.String(), Duration: o.Duration.String(),
		Warmup: o.Warmup.String(), ReplayCutoff: o.ReplayCutoff.String(),
	}
	if o.CutoffRegime > 0 {
		d.CutoffRegime, d.CutoffRates, d.RegimeReplay = o.CutoffRegime.String(), o.CutoffRates, o.RegimeReplayTime.String()
	}
	return d
}

// loadAverage is what `uptime` says (its load averages), or /proc/loadavg.
func loadAverage() string {
	if out, err := exec.Command("uptime").Output(); err == nil {
		s := strings.TrimSpace(string(out))
		if i := strings.Index(s, "load average"); i >= 0 {
			return s[i:]
		}
		return s
	}
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return "load average: " + strings.Join(f[:min(3, len(f))], ", ")
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func memoryGiB() float64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var kib float64
		if _, err := fmt.Sscanf(sc.Text(), "MemTotal: %f kB", &kib); err == nil {
			return kib / (1 << 20)
		}
	}
	return 0
}

func kernel() string {
	out, err := exec.Command("uname", "-sr").Output()
	if err != nil {
		return runtime.GOOS
	}
	return strings.TrimSpace(string(out))
}

func writeJSON(path string, v any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
