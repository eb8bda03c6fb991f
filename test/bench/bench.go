package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/go-logr/logr/funcr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/pkg/clientconfig"
	"github.com/ms2m/ms2m/pkg/manager"
	"github.com/ms2m/ms2m/pkg/migrationclient"
	"github.com/ms2m/ms2m/pkg/sandbox"
)

// Options configure a benchmark run.
type Options struct {
	Rates []float64
	Runs  int
	// ProcessTime is the consumer's time per message.
	ProcessTime time.Duration
	// Duration of each trial's production: Count = rate × Duration.
	Duration time.Duration
	// Warmup of production before the move starts.
	Warmup time.Duration
	// ReplayCutoff is the StatefulMigration's replayCutoffSeconds.
	ReplayCutoff time.Duration
	// The cutoff regime (see regime), run at CutoffRates when
	// CutoffRegime, its short replayCutoffSeconds, is not 0; the consumer
	// spends RegimeReplayTime per replayed message.
	CutoffRegime     time.Duration
	CutoffRates      []float64
	RegimeReplayTime time.Duration
	// MoveTimeout bounds one move.
	MoveTimeout time.Duration

	// Out is where the CSV, the run description, the plot and the
	// Markdown page go (docs/benchmarks.md's directory layout).
	CSV, Run, Plot, Markdown string
	// Micro is `make bench-micro`'s output, rendered on the page when it
	// exists.
	Micro string
	// Memory is `make bench-memory`'s output (the checkpoint's cost against
	// the app's memory), rendered on the page when it exists.
	Memory string
	// ReportOnly regenerates the page and the plot from the CSV.
	ReportOnly bool

	Dir, ControlPlaneDir, BinDir, RepoDir string
	Verbose                               bool
	Log                                   io.Writer
}

type bench struct {
	opts   Options
	sb     *sandbox.Sandbox
	mc     client.WithWatch
	tokens *clientconfig.AudienceTokens
}

func (b *bench) logf(format string, args ...any) {
	_, _ = fmt.Fprintf(b.opts.Log, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// methods are the ways of moving the consumer that the trials compare,
// in the order they run at each rate.
var methods = []method{ms2m, stopAndCopy, cold, regime, regimeCutoff}

// methodsAt are the methods run at rate: MS2M and both baselines at the
// rates compared, the cutoff regime's two at its rates.
func methodsAt(o Options, rate float64) []method {
	var out []method
	if slices.Contains(o.Rates, rate) {
		out = []method{ms2m, stopAndCopy, cold}
	}
	if o.CutoffRegime > 0 && slices.Contains(o.CutoffRates, rate) {
		out = append(out, regime, regimeCutoff)
	}
	return out
}

// isMS2M reports whether the method is MS2M's (ShadowPod, two stalls).
func isMS2M(name string) bool {
	return name == ms2m.Name || name == regime.Name || name == regimeCutoff.Name
}

// label is a method's name on the page.
func label(name string) string {
	switch name {
	case ms2m.Name:
		return "MS2M"
	case regime.Name:
		return "MS2M, slow replay"
	case regimeCutoff.Name:
		return "MS2M, slow replay, short cutoff"
	case cold.Name:
		return "restart-and-rebuild"
	}
	return name
}

// Run benchmarks every rate and method on one sandbox, appending each
// trial's figures to the CSV as it finishes, then writes the report.
func Run(ctx context.Context, o Options) error {
	if o.ReportOnly {
		return report(o)
	}
	b := &bench{opts: o}
	desc := describe(o)
	if err := writeJSON(o.Run, desc); err != nil {
		return err
	}
	csv, err := newCSV(o.CSV)
	if err != nil {
		return err
	}
	defer func() { _ = csv.Close() }()

	if err := b.start(ctx); err != nil {
		return err
	}
	defer b.sb.Stop()
	rates := slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(o.Rates), o.CutoffRates...))))
	b.logf("sandbox ready (%s); %d rates × %d runs, MS2M against 2 baselines; the cutoff regime at %v msg/s", b.sb.Kubeconfig, len(o.Rates), o.Runs, o.CutoffRates)

	for run := 1; run <= o.Runs; run++ {
		for _, rate := range rates {
			for _, m := range methodsAt(o, rate) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				t := &trial{b: b, method: m}
				r := t.run(ctx, rate, run)
				b.logf("%s", r)
				if err := csv.Write(r); err != nil {
					return err
				}
			}
		}
	}
	desc.Finished = time.Now()
	desc.LoadAfter = loadAverage()
	if err := writeJSON(o.Run, desc); err != nil {
		return err
	}
	return report(o)
}

// start brings up the sandbox (three simulated nodes, the ms2m manager
// in process), and issues tokens of the manager's identity, which the cold
// baseline presents to the sidecars as the controller does.
func (b *bench) start(ctx context.Context) error {
	o := b.opts
	if killed := sandbox.Reap(o.Dir); len(killed) > 0 {
		b.logf("stopped %d processes an earlier run left in %s", len(killed), o.Dir)
	}
	// A fresh sandbox each run: etcd data of an earlier one would carry
	// its objects over. Only a directory that holds a sandbox is removed.
	if exists(filepath.Join(o.Dir, "etcd")) || exists(sandbox.StateFile(o.Dir)) {
		if err := os.RemoveAll(o.Dir); err != nil {
			return err
		}
	}
	mgr := manager.DefaultOptions()
	log := funcr.New(func(prefix, args string) {
		if o.Verbose {
			_, _ = fmt.Fprintln(o.Log, prefix, args)
		}
	}, funcr.Options{})
	repo := func(p string) string { return filepath.Join(o.RepoDir, p) }
	b.logf("starting the sandbox in %s", o.Dir)
	sb, err := sandbox.Start(ctx, sandbox.Options{
		Dir: o.Dir, ControlPlaneDir: o.ControlPlaneDir, BinDir: o.BinDir, Nodes: 3,
		CRDDirs: []string{repo("charts/ms2m/crds")}, Log: log.WithName("sandbox"),
		Manager: &mgr, WebhookManifests: repo("config/webhook"), RBACDir: repo("config/rbac"),
	})
	if err != nil {
		return err
	}
	b.sb = sb
	if b.mc, err = migrationclient.New(sb.Config); err != nil {
		return err
	}
	b.tokens = clientconfig.AudienceTokensOf(sb.Client, sandbox.SystemNamespace, "ms2m-manager")
	return nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
