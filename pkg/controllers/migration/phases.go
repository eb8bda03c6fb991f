package migration

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/replay"
)

// The phase machine, as data: per strategy, the phases in the order a
// migration goes through them, each with its step and its deadline. A step
// that is done calls w.next, which enters the following row (after the
// last one, Completed). Adding a phase is a row here and a file named
// after it.

// step runs one phase. It is idempotent: after a crash at any line the
// next reconcile runs it again from what the status records.
type step func(ctx context.Context, w *work) (outcome, error)

// phase is a row of a strategy's table.
type phase struct {
	name v1.Phase
	run  step
	// limit is the phase's deadline (nil: none), from the spec's
	// timeouts or else the manager's defaults.
	limit func(spec *v1.Timeouts, def PhaseTimeouts) time.Duration
}

// strategy is how a migration moves its pod.
type strategy struct {
	phases []phase
	// fencedIn is the phase whose start stopped live processing: the
	// handover's downtime is measured from there.
	fencedIn v1.Phase
}

// strategyOf is the migration's strategy table. Until Pending has chosen
// the strategy, every table starts with the same Pending row. (A function,
// not a package variable, because the steps it names use it.)
func strategyOf(m *v1.StatefulMigration) strategy {
	switch m.Status.Strategy {
	case v1.StrategySequential:
		return sequential()
	case v1.StrategyStopAndCopy:
		return stopAndCopy()
	}
	return shadowPod()
}

// shadowPod: the target runs beside the source, replays while the source
// serves, and takes over at the fence.
func shadowPod() strategy {
	return strategy{
		phases: []phase{
			{v1.PhasePending, pending, nil},
			{v1.PhaseCheckpointing, checkpointing, checkpointLimit},
			{v1.PhaseTransferring, transferring, transferLimit},
			{v1.PhaseRestoring, restoring, restoreLimit},
			{v1.PhaseReplaying, replaying, nil}, // bounded by the replay cutoff
			{v1.PhaseFinalizing, finalizing, finalizeLimit},
		},
		fencedIn: v1.PhaseFinalizing,
	}
}

// sequential: a StatefulSet's pod keeps its name, so the source is fenced
// and released before its StatefulSet recreates it, restored, on the
// target node.
func sequential() strategy {
	return strategy{
		phases: []phase{
			{v1.PhasePending, pending, nil},
			{v1.PhaseCheckpointing, checkpointing, checkpointLimit},
			{v1.PhaseTransferring, transferringThenFence, transferLimit},
			{v1.PhaseRestoring, restoringInPlace, restoreLimit},
			{v1.PhaseReplaying, replayingToFence, nil},
			{v1.PhaseFinalizing, finalizingInPlace, finalizeLimit},
		},
		fencedIn: v1.PhaseRestoring,
	}
}

// stopAndCopy: the source stays stopped from its checkpoint (the agent
// does not resume it; the fence is taken where it paused) through the
// transfer and the restore, until the target, with nothing to replay, is
// live at the fence: the papers' stop-and-copy on MS2M's own path.
func stopAndCopy() strategy {
	return strategy{
		phases: []phase{
			{v1.PhasePending, pending, nil},
			{v1.PhaseCheckpointing, checkpointingThenFence, checkpointLimit},
			{v1.PhaseTransferring, transferring, transferLimit},
			{v1.PhaseRestoring, restoring, restoreLimit},
			{v1.PhaseReplaying, replayingToFence, nil},
			{v1.PhaseFinalizing, finalizing, finalizeLimit},
		},
		fencedIn: v1.PhaseCheckpointing,
	}
}

func checkpointLimit(s *v1.Timeouts, d PhaseTimeouts) time.Duration {
	return seconds(s.CheckpointSeconds, d.Checkpoint)
}
func transferLimit(s *v1.Timeouts, d PhaseTimeouts) time.Duration {
	return seconds(s.TransferSeconds, d.Transfer)
}
func restoreLimit(s *v1.Timeouts, d PhaseTimeouts) time.Duration {
	return seconds(s.RestoreSeconds, d.Restore)
}
func finalizeLimit(s *v1.Timeouts, d PhaseTimeouts) time.Duration {
	return seconds(s.FinalizeSeconds, d.Finalize)
}

func seconds(spec *int32, def time.Duration) time.Duration {
	if spec != nil {
		return time.Duration(*spec) * time.Second
	}
	return def
}

// current is the row of the migration's phase.
func (w *work) current() (int, phase, bool) {
	for i, p := range strategyOf(w.m).phases {
		if p.name == w.m.Status.Phase {
			return i, p, true
		}
	}
	return 0, phase{}, false
}

// work is one reconcile of one migration.
type work struct {
	r      *Reconciler
	m      *v1.StatefulMigration
	source *corev1.Pod
	// written is the migration as last read or written: what the status
	// patch is computed against.
	written *v1.StatefulMigration
	// events are recorded once the status that reports them is written, so
	// a reconcile that lost a conflict does not announce what did not happen.
	events []event
	// The handover's path through this reconcile, by the controller's
	// clock: how long the fence call took and when it answered (zero when
	// the fence was in an earlier reconcile).
	fenceCall     time.Duration
	fenceAnswered time.Time
}

type event struct{ kind, reason, msg string }

func (w *work) event(kind, reason, format string, args ...any) {
	w.events = append(w.events, event{kind, reason, fmt.Sprintf(format, args...)})
}

type outcome struct {
	result reconcile.Result
	fail   *failure
}

type failure struct{ reason, msg string }

func wait() (outcome, error) { return outcome{}, nil }

func after(d time.Duration) (outcome, error) {
	return outcome{result: reconcile.Result{RequeueAfter: d}}, nil
}

func fail(reason, format string, args ...any) (outcome, error) {
	return outcome{fail: &failure{reason: reason, msg: fmt.Sprintf(format, args...)}}, nil
}

// sidecarFailed turns a failed sidecar call into the phase's outcome: a
// refusal by the sidecar fails the migration; a call that did not get an
// answer (the manager shutting down, the network) is retried, bounded by
// the phase's timeout, since every sidecar call is idempotent.
func sidecarFailed(ctx context.Context, err error, reason, format string, args ...any) (outcome, error) {
	var refused *replay.CallError
	// 503: the sidecar could not answer for now (Kafka unreachable); the
	// call is idempotent and is made again until the phase's deadline.
	if ctx.Err() != nil || !errors.As(err, &refused) || refused.Status == http.StatusServiceUnavailable {
		return outcome{}, fmt.Errorf(format+": %w", append(args, err)...)
	}
	return fail(reason, format+": %v", append(args, err)...)
}

// next enters the phase after the current one in the strategy's table
// (Completed after the last), with an Event saying msg and the finished
// phase's duration observed.
func (w *work) next(msg string) outcome {
	to := v1.PhaseCompleted
	if i, _, ok := w.current(); ok {
		if phases := strategyOf(w.m).phases; i+1 < len(phases) {
			to = phases[i+1].name
		}
	}
	now := w.r.Clock.Now()
	prev := w.m.Status.Phase
	if started := enteredAt(&w.m.Status, prev); !started.IsZero() && w.r.Metrics != nil {
		w.r.Metrics.PhaseSeconds.WithLabelValues(string(prev)).Observe(now.Sub(started).Seconds())
	}
	if enterPhase(&w.m.Status, to, now) {
		w.event(corev1.EventTypeNormal, string(to), "%s → %s: %s", prev, to, msg)
	}
	return outcome{result: reconcile.Result{Requeue: true}}
}

// nextNow is next, then the new phase's step in the same reconcile: for
// a phase that must follow without waiting for the status write and a
// watch event.
func (w *work) nextNow(ctx context.Context, msg string) (outcome, error) {
	o := w.next(msg)
	if _, p, ok := w.current(); ok {
		return p.run(ctx, w)
	}
	return o, nil
}

// limit is the current phase's deadline (0: none).
func (w *work) limit() time.Duration {
	_, p, ok := w.current()
	if !ok || p.limit == nil {
		return 0
	}
	spec := w.m.Spec.Timeouts
	if spec == nil {
		spec = &v1.Timeouts{}
	}
	return p.limit(spec, w.r.Opts.Timeouts)
}

// timedOut fails the current phase when it has run longer than its limit.
func (w *work) timedOut() (outcome, bool) {
	limit := w.limit()
	started := enteredAt(&w.m.Status, w.m.Status.Phase)
	if limit == 0 || started.IsZero() || w.r.Clock.Since(started) < limit {
		return outcome{}, false
	}
	o, _ := fail(v1.ReasonPhaseTimedOut, "phase %s did not finish within %s", w.m.Status.Phase, limit)
	return o, true
}

// remaining is how long until the current phase times out: when to look
// again if nothing wakes the migration before.
func (w *work) remaining() time.Duration {
	limit := w.limit()
	if limit == 0 {
		return time.Minute
	}
	return max(limit-w.r.Clock.Since(enteredAt(&w.m.Status, w.m.Status.Phase)), time.Second)
}
