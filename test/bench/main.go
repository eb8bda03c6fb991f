// Command bench measures MS2M live migration against a cold migration of
// the example stateful consumer, in one sandbox, across message rates:
// downtime (measured from the records the consumer produces, the same way
// for both methods), total time, time per phase, messages replayed, lost
// and duplicated. It writes a CSV and regenerates docs/benchmarks.md and
// its plot. `make bench-migration` runs it; docs/benchmarks.md says how
// the figures are taken.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ms2m/ms2m/pkg/sandbox"
)

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (Options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	rates := fs.String("rates", "10,20,40,60,80,100,120", "Producer rates (msg/s), comma-separated.")
	o := Options{Log: os.Stderr}
	fs.IntVar(&o.Runs, "runs", 5, "Runs per rate and method.")
	fs.DurationVar(&o.ProcessTime, "process-time", 5*time.Millisecond, "The consumer's time per message (5 ms: about 150–200 msg/s, so every default rate is below capacity).")
	fs.DurationVar(&o.Duration, "duration", 15*time.Second, "Production per trial: rate × duration messages.")
	fs.DurationVar(&o.Warmup, "warmup", 4*time.Second, "Production before the move starts.")
	fs.DurationVar(&o.ReplayCutoff, "replay-cutoff", 10*time.Second, "The StatefulMigration's replayCutoffSeconds.")
	fs.DurationVar(&o.CutoffRegime, "cutoff-regime", time.Second, "The cutoff regime's short replayCutoffSeconds (0: the regime is not run).")
	cutoffRates := fs.String("cutoff-rates", "60,100", "Rates (msg/s) of the cutoff regime: MS2M on a consumer that replays at --regime-replay-process-time, with the default and the short cutoff.")
	fs.DurationVar(&o.RegimeReplayTime, "regime-replay-process-time", 10*time.Millisecond, "The cutoff regime's time per replayed message (10 ms: about 90 msg/s, so λ crosses μ between the regime's rates).")
	fs.DurationVar(&o.MoveTimeout, "move-timeout", 5*time.Minute, "Longest one move may take.")
	fs.StringVar(&o.Markdown, "markdown", "docs/benchmarks.md", "The page to regenerate.")
	fs.StringVar(&o.CSV, "csv", "docs/benchmarks/migration.csv", "Every trial's figures.")
	fs.StringVar(&o.Run, "run-file", "docs/benchmarks/migration-run.json", "The machine and settings of the run.")
	fs.StringVar(&o.Plot, "plot", "docs/benchmarks/migration.png", "Downtime and total time against rate.")
	fs.StringVar(&o.Micro, "micro", "docs/benchmarks/micro.txt", "`go test -bench` output (make bench-micro) to render on the page, when it exists.")
	fs.StringVar(&o.Memory, "memory", "docs/benchmarks/memory.txt", "`make bench-memory` output to render on the page, when it exists.")
	fs.BoolVar(&o.ReportOnly, "report-only", false, "Regenerate the page and the plot from the CSV and run file; run nothing.")
	fs.StringVar(&o.Dir, "dir", filepath.Join(os.TempDir(), "ms2m-bench-sandbox"), "The sandbox's state directory.")
	fs.StringVar(&o.ControlPlaneDir, "control-plane-dir", sandbox.DefaultControlPlaneDir(), "Directory with etcd and the Kubernetes control plane (make control-plane).")
	fs.StringVar(&o.BinDir, "bin-dir", "bin", "Directory with the project's binaries (make build).")
	fs.StringVar(&o.RepoDir, "repo", ".", "The repository (CRDs, webhook and RBAC manifests).")
	fs.BoolVar(&o.Verbose, "verbose", false, "Show the sandbox's log.")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var err error
	if o.Rates, err = parseRates("--rates", *rates); err != nil {
		return o, err
	}
	if *cutoffRates != "" {
		if o.CutoffRates, err = parseRates("--cutoff-rates", *cutoffRates); err != nil {
			return o, err
		}
	}
	switch {
	case o.Runs < 1:
		return o, fmt.Errorf("--runs must be at least 1")
	case o.Warmup >= o.Duration:
		return o, fmt.Errorf("--warmup %s must be shorter than --duration %s", o.Warmup, o.Duration)
	case o.ReplayCutoff < time.Second:
		return o, fmt.Errorf("--replay-cutoff must be at least 1s")
	case o.CutoffRegime != 0 && (o.CutoffRegime < time.Second || o.CutoffRegime%time.Second != 0):
		return o, fmt.Errorf("--cutoff-regime must be whole seconds, at least 1s (or 0)")
	}
	if o.BinDir, err = filepath.Abs(o.BinDir); err != nil {
		return o, err
	}
	return o, nil
}

func parseRates(flag, list string) ([]float64, error) {
	var out []float64
	for _, s := range strings.Split(list, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || r <= 0 {
			return nil, fmt.Errorf("%s: %q is not a positive rate", flag, s)
		}
		out = append(out, r)
	}
	return out, nil
}
