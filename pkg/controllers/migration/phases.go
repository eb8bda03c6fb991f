package migration

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/replay"
)

// step runs one phase. It is idempotent: after a crash at any line the
// next reconcile runs it again from what the status records.
type step func(ctx context.Context, w *work) (outcome, error)

// phases is the phase table.
var phases = map[v1.Phase]step{
	v1.PhasePending:       pending,
	v1.PhaseCheckpointing: checkpointing,
	v1.PhaseTransferring:  transferring,
	v1.PhaseRestoring:     restoring,
	v1.PhaseReplaying:     replaying,
	v1.PhaseFinalizing:    finalizing,
}

// work is one reconcile of one migration.
type work struct {
	r      *Reconciler
	m      *v1.StatefulMigration
	source *corev1.Pod
	// events are recorded once the status that reports them is written, so
	// a reconcile that lost a conflict does not announce what did not happen.
	events []event
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

// sidecarFailed turns a failed sidecar call into the phase's outcome: a
// refusal by the sidecar fails the migration; a call that did not get an
// answer (the manager shutting down, the network) is retried, bounded by
// the phase's timeout, since every sidecar call is idempotent.
func sidecarFailed(ctx context.Context, err error, reason, format string, args ...any) (outcome, error) {
	var refused *replay.CallError
	if ctx.Err() != nil || !errors.As(err, &refused) {
		return outcome{}, fmt.Errorf(format+": %w", append(args, err)...)
	}
	return fail(reason, format+": %v", append(args, err)...)
}

func after(d time.Duration) (outcome, error) {
	return outcome{result: reconcile.Result{RequeueAfter: d}}, nil
}

func fail(reason, format string, args ...any) (outcome, error) {
	return outcome{fail: &failure{reason: reason, msg: fmt.Sprintf(format, args...)}}, nil
}

func metaNow(t time.Time) metav1.Time { return metav1.NewTime(t) }

// advance enters the next phase, with an Event and the phase's duration
// observed.
func (w *work) advance(phase v1.Phase, reason, msg string) outcome {
	now := w.r.Clock.Now()
	prev := w.m.Status.Phase
	if started := enteredAt(&w.m.Status, prev); !started.IsZero() && w.r.Metrics != nil {
		w.r.Metrics.PhaseSeconds.WithLabelValues(string(prev)).Observe(now.Sub(started).Seconds())
	}
	if enterPhase(&w.m.Status, phase, now) {
		w.event(corev1.EventTypeNormal, reason, "%s → %s: %s", prev, phase, msg)
	}
	return outcome{result: reconcile.Result{Requeue: true}}
}

// timedOut fails the current phase when it has run longer than limit.
func (w *work) timedOut(limit time.Duration) (outcome, bool) {
	started := enteredAt(&w.m.Status, w.m.Status.Phase)
	if started.IsZero() || w.r.Clock.Since(started) < limit {
		return outcome{}, false
	}
	o, _ := fail(v1.ReasonPhaseTimedOut, "phase %s did not finish within %s", w.m.Status.Phase, limit)
	return o, true
}

// remaining is how long until the current phase times out.
func (w *work) remaining(limit time.Duration) time.Duration {
	return max(limit-w.r.Clock.Since(enteredAt(&w.m.Status, w.m.Status.Phase)), time.Second)
}

func (w *work) timeout(spec *int32, def time.Duration) time.Duration {
	if spec != nil {
		return time.Duration(*spec) * time.Second
	}
	return def
}

func (w *work) timeouts() (checkpoint, transfer, restore, finalize time.Duration) {
	t := w.m.Spec.Timeouts
	if t == nil {
		t = &v1.Timeouts{}
	}
	d := w.r.Opts.Timeouts
	return w.timeout(t.CheckpointSeconds, d.Checkpoint), w.timeout(t.TransferSeconds, d.Transfer),
		w.timeout(t.RestoreSeconds, d.Restore), w.timeout(t.FinalizeSeconds, d.Finalize)
}
