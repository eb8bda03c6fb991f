package sandbox

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	migrationv1alpha1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/manager"
	"github.com/ms2m/ms2m/scheduler"
)

// withExtender has the manager serve the scheduler extender on a free port
// and configures the scheduler with it: pods that request
// ResourceCheckpointRestore (the webhook adds it to migratable pods) go to
// the extender, which admits only nodes that can restore checkpoints.
func withExtender(opts *Options) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	m := *opts.Manager
	m.SchedulerExtender.BindAddress = fmt.Sprintf("127.0.0.1:%d", port)
	opts.Manager = &m
	opts.SchedulerExtenders = append(opts.SchedulerExtenders, map[string]any{
		"urlPrefix":        "http://" + m.SchedulerExtender.BindAddress,
		"filterVerb":       strings.TrimPrefix(scheduler.FilterPath, "/"),
		"prioritizeVerb":   strings.TrimPrefix(scheduler.PrioritizePath, "/"),
		"weight":           1,
		"nodeCacheCapable": true,
		"httpTimeout":      "5s",
		"managedResources": []map[string]any{{"name": migrationv1alpha1.ResourceCheckpointRestore, "ignoredByScheduler": true}},
	})
	return nil
}

// startManager runs the ms2m manager in the sandbox process, serving the
// webhooks envtest registered, and waits until it is ready.
func (s *Sandbox) startManager(ctx context.Context, opts manager.Options) error {
	cfg, err := s.install(ctx)
	if err != nil {
		return err
	}
	s.mgrCfg, s.mgrOpts = cfg, opts
	return s.runManager(ctx)
}

// ReconfigureManager restarts the ms2m manager (a graceful stop: in
// process, its context is cancelled and the reconciles in flight return;
// KillManager is the crash) with its options changed by change (a benchmark raising --max-outbound-migrations-per-node, say);
// later restarts keep the change.
func (s *Sandbox) ReconfigureManager(ctx context.Context, change func(*manager.Options)) error {
	if err := s.stopManager(); err != nil {
		return err
	}
	change(&s.mgrOpts)
	return s.runManager(ctx)
}

// ManagerAsProcess restarts the ms2m manager as a child process (on) or
// inside the sandbox's own process (off, the default: faster to start,
// its logs go to Options.Log). Only a child process can be killed. The
// program running the sandbox must call RunManagerChild first thing in
// main (or TestMain): the child is that program started again.
func (s *Sandbox) ManagerAsProcess(ctx context.Context, on bool) error {
	if err := s.stopManager(); err != nil {
		return err
	}
	s.mgrProcess = on
	return s.runManager(ctx)
}

// KillManager SIGKILLs the manager's process, as a node failure or the
// OOM killer would: no reconcile finishes, no request completes. It
// returns once the process is gone; StartManager starts a new one.
func (s *Sandbox) KillManager() error {
	if s.mgrKill == nil {
		return fmt.Errorf("sandbox: the ms2m manager does not run as a process (see ManagerAsProcess)")
	}
	if err := s.mgrKill(); err != nil {
		return fmt.Errorf("sandbox: killing the manager: %w", err)
	}
	<-s.mgrDone
	s.stopMgr, s.mgrKill = nil, nil
	return nil
}

// StartManager starts the manager after KillManager, with the options it
// had, and waits until it is ready.
func (s *Sandbox) StartManager(ctx context.Context) error {
	if s.stopMgr != nil {
		return fmt.Errorf("sandbox: the ms2m manager already runs")
	}
	return s.runManager(ctx)
}

// stopManager stops the manager gracefully and waits until it has; a
// killed one is stopped already.
func (s *Sandbox) stopManager() error {
	if s.mgrCfg == nil {
		return fmt.Errorf("sandbox: no ms2m manager runs here")
	}
	if s.stopMgr == nil {
		return nil // killed
	}
	s.stopMgr()
	<-s.mgrDone
	s.stopMgr, s.mgrKill = nil, nil
	return nil
}

func (s *Sandbox) runManager(ctx context.Context) error {
	opts := s.mgrOpts
	var err error
	if opts.CheckpointImageRepository == "" {
		opts.CheckpointImageRepository = s.Registry + "/checkpoints"
	}
	if len(opts.PlainHTTPRegistries) == 0 {
		opts.PlainHTTPRegistries = []string{s.Registry} // the sandbox registry speaks plain HTTP on loopback
	}
	wio := s.cp.env.WebhookInstallOptions
	opts.WebhookPort, opts.WebhookCertDir = wio.LocalServingPort, wio.LocalServingCertDir
	opts.LeaderElection, opts.Restartable = false, !s.mgrProcess
	opts.MetricsAddr = "0"
	var probe int
	probe, err = freePort()
	if err != nil {
		return err
	}
	opts.ProbeAddr = fmt.Sprintf("127.0.0.1:%d", probe)
	s.mgrDone = make(chan error, 1)
	if s.mgrProcess {
		if err := s.startManagerProcess(opts); err != nil {
			return err
		}
	} else {
		ctrllog.SetLogger(s.opts.Log.WithName("manager"))
		mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		s.stopMgr = cancel
		go func() { s.mgrDone <- manager.Run(mctx, s.mgrCfg, opts) }()
	}
	url := fmt.Sprintf("http://%s/readyz", opts.ProbeAddr)
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		select {
		case err := <-s.mgrDone:
			s.mgrDone <- err
			return false, fmt.Errorf("the ms2m manager exited: %w", err)
		default:
		}
		resp, err := http.Get(url) //nolint:noctx // loopback probe
		if err != nil {
			return false, nil
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("sandbox: ms2m manager not ready: %w", err)
	}
	return s.waitAgents(ctx)
}
