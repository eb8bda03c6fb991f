package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migrationclient"
)

// maxEvents bounds the events status shows, the latest ones.
const maxEvents = 10

type statusOptions struct {
	*options
	output outputFlag
}

func newStatusCommand(root *options) *cobra.Command {
	o := &statusOptions{options: root}
	cmd := &cobra.Command{
		Use:   "status NAME",
		Short: "Show one migration: phases, target, checkpoint, offsets, conditions, events",
		Long: `Show a StatefulMigration for people: its phase and how long each phase
took, the source and target, the checkpoint image, the checkpoint (O) and
fence (F) offsets, replay progress, downtime, conditions and the latest
events. With -o json or -o yaml, print the object as the API serves it.`,
		Example: `  # Summary of one migration
  kubectl ms2m status orders-0-x7k2p

  # The whole object, for a script
  kubectl ms2m status orders-0-x7k2p -o json | jq .status.downtime`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.output.validate(); err != nil {
				return err
			}
			return o.run(cmd.Context(), args[0])
		},
	}
	addOutputFlag(cmd, &o.output)
	return cmd
}

func (o *statusOptions) run(ctx context.Context, name string) error {
	ns, c, err := o.target()
	if err != nil {
		return err
	}
	m, err := getMigration(ctx, c, ns, name, " (kubectl ms2m list -A shows them all)")
	if err != nil {
		return err
	}
	if o.output != "" {
		return o.output.print(o.streams.Out, m)
	}
	events := &corev1.EventList{}
	// Events are a help, not the answer: a user who may not read them
	// still gets the rest.
	if err := c.List(ctx, events, client.InNamespace(ns), client.MatchingFields{"involvedObject.uid": string(m.UID)}); err != nil {
		events.Items = nil
	}
	return describe(o.streams.Out, m, events.Items, o.now())
}

// describe writes the readable summary of m. Each section is aligned on
// its own.
func describe(out io.Writer, m *v1.StatefulMigration, events []corev1.Event, now time.Time) error {
	for _, section := range []func(io.Writer){
		func(w io.Writer) { describeFields(w, m, now) },
		func(w io.Writer) { describePhases(w, &m.Status, now) },
		func(w io.Writer) { describeConditions(w, m.Status.Conditions) },
		func(w io.Writer) { describeEvents(w, events, now) },
	} {
		w := printers.GetNewTabWriter(out)
		section(w)
		if err := w.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func describeFields(w io.Writer, m *v1.StatefulMigration, now time.Time) {
	st := &m.Status
	field := func(k, format string, args ...any) { fmt.Fprintf(w, "%s:\t%s\n", k, fmt.Sprintf(format, args...)) }
	field("Name", "%s", m.Name)
	field("Namespace", "%s", m.Namespace)
	switch {
	case st.Phase == "":
		field("Phase", "none yet: the ms2m controller has not picked it up")
	case st.Phase.IsTerminal():
		field("Phase", "%s", st.Phase)
		field("Result", "%s", migrationclient.Summary(m))
	default:
		field("Phase", "%s, running for %s", st.Phase, migrationclient.FormatDuration(migrationclient.Elapsed(st, now)))
		if held := migrationclient.Held(m); held != "" {
			field("Held", "%s", held)
		}
	}
	field("Source", "pod %s%s", m.Spec.SourcePod, on(st.SourceNode))
	field("Target", "%s", target(m))
	if st.Strategy != "" {
		field("Strategy", "%s", st.Strategy)
	}
	if st.CheckpointImage != "" {
		img := st.CheckpointImage
		if st.CheckpointSizeBytes > 0 {
			img += " (" + resource.NewQuantity(st.CheckpointSizeBytes, resource.BinarySI).String() + ")"
		}
		field("Checkpoint image", "%s", img)
	}
	if len(st.CheckpointOffsets) > 0 {
		field("Checkpoint offsets (O)", "%s", offsets(st.CheckpointOffsets))
	}
	if len(st.FenceOffsets) > 0 {
		field("Fence offsets (F)", "%s", offsets(st.FenceOffsets))
	}
	if st.Replay != nil {
		field("Replay", "%s", migrationclient.ReplayLine(st.Replay))
	}
	if st.Downtime != nil {
		field("Downtime", "%s", migrationclient.DowntimeLine(st))
		pause, handover := migrationclient.StallPaths(m)
		if pause != "" {
			field("  Checkpoint pause", "%s", pause)
		}
		if handover != "" {
			field("  Handover", "%s", handover)
		}
	}
}

// target says where the pod goes: the node asked for or chosen, and the
// restored pod once there is one.
func target(m *v1.StatefulMigration) string {
	st := &m.Status
	t := "chosen by the controller"
	switch {
	case st.TargetNode != "" && m.Spec.TargetNode != "":
		t = "node " + st.TargetNode + " (requested)"
	case st.TargetNode != "":
		t = "node " + st.TargetNode + " (chosen by the controller)"
	case m.Spec.TargetNode != "":
		t = "node " + m.Spec.TargetNode + " (requested)"
	}
	if st.TargetPod != "" {
		t += ", pod " + st.TargetPod
	}
	return t
}

func describePhases(w io.Writer, st *v1.StatefulMigrationStatus, now time.Time) {
	spans := migrationclient.PhaseSpans(st, now)
	if len(spans) == 0 {
		return
	}
	fmt.Fprintln(w, "Phases:")
	fmt.Fprintln(w, "  PHASE\tSTARTED\tDURATION")
	for _, s := range spans {
		d := migrationclient.FormatDuration(s.Duration)
		switch {
		case s.Current:
			d += " so far"
		case s.Phase.IsTerminal():
			d = "-"
		}
		fmt.Fprintf(w, "  %s\t+%s\t%s\n", s.Phase, migrationclient.FormatDuration(s.Entered.Sub(spans[0].Entered)), d)
	}
}

func describeConditions(w io.Writer, conds []metav1.Condition) {
	if len(conds) == 0 {
		return
	}
	fmt.Fprintln(w, "Conditions:")
	fmt.Fprintln(w, "  TYPE\tSTATUS\tREASON\tMESSAGE")
	for _, c := range conds {
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", c.Type, c.Status, c.Reason, c.Message)
	}
}

// describeEvents lists the latest events, oldest first, as kubectl
// describe does.
func describeEvents(w io.Writer, events []corev1.Event, now time.Time) {
	if len(events) == 0 {
		fmt.Fprintln(w, "Events: <none>")
		return
	}
	sort.SliceStable(events, func(i, j int) bool { return eventTime(&events[i]).Before(eventTime(&events[j])) })
	if len(events) > maxEvents {
		events = events[len(events)-maxEvents:]
	}
	fmt.Fprintln(w, "Events:")
	fmt.Fprintln(w, "  AGE\tTYPE\tREASON\tMESSAGE")
	for i := range events {
		e := &events[i]
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", duration.HumanDuration(now.Sub(eventTime(e))), e.Type, e.Reason, strings.TrimSpace(e.Message))
	}
}

// eventTime is when an event last happened, whichever API wrote it.
func eventTime(e *corev1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

func offsets(offs []v1.PartitionOffset) string {
	parts := make([]string, 0, len(offs))
	for _, o := range offs {
		parts = append(parts, fmt.Sprintf("%s/%d=%d", o.Topic, o.Partition, o.Offset))
	}
	return strings.Join(parts, " ")
}

func on(node string) string {
	if node == "" {
		return ""
	}
	return " on node " + node
}
