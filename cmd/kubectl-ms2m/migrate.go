package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migrationclient"
)

type migrateOptions struct {
	*options
	to      string
	name    string
	wait    bool
	timeout time.Duration
}

func newMigrateCommand(root *options) *cobra.Command {
	o := &migrateOptions{options: root}
	cmd := &cobra.Command{
		Use:   "migrate POD [--to NODE] [--wait]",
		Short: "Live-migrate a pod to another node",
		Long: `Create a StatefulMigration of POD, in the current namespace.

Without --to the controller picks the best node that can restore
checkpoints. With --wait the command follows the migration as the controller
writes its status: each phase with the time since the start, the replay lag
and the replay (μ) and arrival (λ) rates while the target catches up, and a
last line with the total time, the downtime, the messages replayed and
the fence at which the source stopped and the target went live, or why the migration failed and what the rollback did. It exits
with 1 when the migration fails.

Interrupting --wait (or reaching --timeout) stops following, not the
migration: cancel it with "kubectl ms2m cancel".`,
		Example: `  # Move orders-0 to worker-2 and follow it
  kubectl ms2m migrate orders-0 --to worker-2 --wait

  # Let the controller choose the node; name the migration
  kubectl ms2m migrate orders-0 --name orders-0-friday -n shop

  # In a script: fail if the migration does not complete within 5 minutes
  kubectl ms2m migrate orders-0 --wait --timeout 5m || alert`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), args[0])
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.to, "to", "", "node to move the pod to (default: the controller chooses)")
	f.StringVar(&o.name, "name", "", "name of the StatefulMigration (default: generated from the pod's name)")
	f.BoolVarP(&o.wait, "wait", "w", false, "follow the migration until it completes or fails")
	f.DurationVar(&o.timeout, "timeout", 10*time.Minute, "with --wait, how long to follow before giving up (0: no limit)")
	return cmd
}

func (o *migrateOptions) run(ctx context.Context, pod string) error {
	ns, c, err := o.target()
	if err != nil {
		return err
	}
	m, err := migrationclient.Create(ctx, c, migrationclient.Request{Namespace: ns, Pod: pod, TargetNode: o.to, Name: o.name})
	if err != nil {
		return err
	}
	target := "the node the controller chooses"
	if o.to != "" {
		target = "node " + o.to
	}
	fmt.Fprintf(o.streams.Out, "statefulmigration/%s created: pod %s → %s\n", m.Name, pod, target)
	if !o.wait {
		fmt.Fprintf(o.streams.Out, "follow it with: kubectl ms2m status %s -n %s\n", m.Name, ns)
		return nil
	}
	return o.follow(ctx, c, m)
}

// follow prints the migration's progress until it ends.
func (o *migrateOptions) follow(ctx context.Context, c client.WithWatch, m *v1.StatefulMigration) error {
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	out := newLineWriter(o.streams.Out, o.tty())
	var p migrationclient.Progress
	last, err := migrationclient.Follow(ctx, c, client.ObjectKeyFromObject(m), func(m *v1.StatefulMigration) {
		for _, l := range p.Observe(m) {
			out.write(l)
		}
	})
	out.finish()
	if last != nil {
		m = last
	}
	switch {
	case errors.Is(err, migrationclient.ErrDeleted):
		return fmt.Errorf("StatefulMigration %s was deleted while %s: the controller rolls back an unfinished migration", m.Name, phaseOf(m))
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("StatefulMigration %s is still %s after %s; it goes on: kubectl ms2m status %s, or stop it with kubectl ms2m cancel %s",
			m.Name, phaseOf(m), o.timeout, m.Name, m.Name)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("stopped following StatefulMigration %s (%s); it goes on: kubectl ms2m status %s", m.Name, phaseOf(m), m.Name)
	case err != nil:
		return err
	case m.Status.Phase == v1.PhaseFailed:
		return fmt.Errorf("StatefulMigration %s failed: %s", m.Name, m.Status.FailureReason)
	}
	return nil
}

func phaseOf(m *v1.StatefulMigration) string {
	if m.Status.Phase == "" {
		return "not yet picked up by the controller"
	}
	return string(m.Status.Phase)
}
