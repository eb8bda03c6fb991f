package agent

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// Labeler keeps the node's capability labels current, and says why in an
// Event on the node and in its log whenever the outcome changes. Its own
// node's ms2m.io/* labels are all the agent may change of any node: the
// chart's ValidatingAdmissionPolicy <release>-agent-node-labels refuses it
// the rest, whatever its ClusterRole allows.
type Labeler struct {
	Client   client.Client
	NodeName string
	Prober   Prober
	Interval time.Duration
	// Recorder receives the Events (none when nil).
	Recorder record.EventRecorder

	// reported is the last outcome reported, so that an unchanged one is
	// not repeated every Interval.
	reported string
}

// Start probes now and every Interval (a manager Runnable).
func (l *Labeler) Start(ctx context.Context) error {
	t := time.NewTicker(l.Interval)
	defer t.Stop()
	for {
		if err := l.label(ctx); err != nil && ctx.Err() == nil {
			log.FromContext(ctx).Error(err, "labelling the node's checkpoint/restore capability", "node", l.NodeName)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// NeedLeaderElection is false: every agent labels its own node.
func (l *Labeler) NeedLeaderElection() bool { return false }

func (l *Labeler) label(ctx context.Context) error {
	n := &corev1.Node{}
	if err := l.Client.Get(ctx, client.ObjectKey{Name: l.NodeName}, n); err != nil {
		return err
	}
	c := l.Prober.Probe(n)
	l.report(ctx, n, c)
	want := c.Labels()
	patch := client.MergeFrom(n.DeepCopy())
	changed := false
	for _, k := range labelKeys {
		v, ok := want[k]
		if cur, has := n.Labels[k]; (ok && cur != v) || (!ok && has) {
			changed = true
			if ok {
				if n.Labels == nil {
					n.Labels = map[string]string{}
				}
				n.Labels[k] = v
			} else {
				delete(n.Labels, k)
			}
		}
	}
	if !changed {
		return nil
	}
	return l.Client.Patch(ctx, n, patch)
}

// report logs the outcome and records it as an Event on the node when it
// differs from the last one reported.
func (l *Labeler) report(ctx context.Context, n *corev1.Node, c Capability) {
	summary := c.Summary()
	if summary == l.reported {
		return
	}
	l.reported = summary
	log.FromContext(ctx).Info("node checkpoint/restore capability", "node", l.NodeName, "canRestore", c.CanRestore,
		"why", c.Why, "criu", c.CRIUPath, "criuVersion", c.CRIUVersion, "criuVersionFrom", c.CRIUVersionFrom)
	if l.Recorder == nil {
		return
	}
	if c.CanRestore {
		l.Recorder.Event(n, corev1.EventTypeNormal, ReasonCheckpointRestoreAvailable, summary)
	} else {
		l.Recorder.Event(n, corev1.EventTypeWarning, ReasonCheckpointRestoreUnavailable, summary)
	}
}
