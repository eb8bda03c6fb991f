package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migrationclient"
)

type cancelOptions struct {
	*options
	wait    bool
	timeout time.Duration
}

func newCancelCommand(root *options) *cobra.Command {
	o := &cancelOptions{options: root}
	cmd := &cobra.Command{
		Use:   "cancel NAME",
		Short: "Cancel a migration: the controller rolls it back",
		Long: `Cancel a StatefulMigration by deleting it. Deleting is the cancel: the
controller holds the object (with a finalizer) until it has rolled an
unfinished migration back: the target pod is removed and the source resumes
serving from where it paused, so nothing is lost. A migration already past
the handover is finished instead, since the target already serves. Deleting
a Completed or Failed migration only removes its record.

With --wait the command returns once the object is gone, that is once the
rollback is done.`,
		Example: `  # Cancel and return at once; the rollback goes on
  kubectl ms2m cancel orders-0-x7k2p

  # Cancel and wait until the source serves again
  kubectl ms2m cancel orders-0-x7k2p --wait`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), args[0])
		},
	}
	cmd.Flags().BoolVarP(&o.wait, "wait", "w", false, "wait until the rollback is done and the StatefulMigration is gone")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 5*time.Minute, "with --wait, how long to wait (0: no limit)")
	return cmd
}

func (o *cancelOptions) run(ctx context.Context, name string) error {
	ns, c, err := o.target()
	if err != nil {
		return err
	}
	m, err := getMigration(ctx, c, ns, name, ": nothing to cancel")
	if err != nil {
		return err
	}
	if err := c.Delete(ctx, m, client.Preconditions{UID: &m.UID}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	fmt.Fprintf(o.streams.Out, "statefulmigration/%s deleted: %s\n", name, whatCancelDoes(m))
	if !o.wait {
		return nil
	}
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	if len(m.Finalizers) > 0 {
		fmt.Fprintf(o.streams.Out, "waiting for the controller to let go of %s...\n", name)
	}
	if err := migrationclient.WaitGone(ctx, c, client.ObjectKeyFromObject(m)); err != nil {
		return err
	}
	fmt.Fprintf(o.streams.Out, "statefulmigration/%s is gone\n", name)
	return nil
}

// whatCancelDoes says what deleting m makes the controller do.
func whatCancelDoes(m *v1.StatefulMigration) string {
	switch {
	case m.Status.Phase.IsTerminal():
		return fmt.Sprintf("it had already %s, so only its record is removed", m.Status.Phase)
	case meta.IsStatusConditionTrue(m.Status.Conditions, v1.ConditionHandedOver):
		return "it is past the handover (the target serves), so the controller finishes it rather than rolling back"
	case m.Status.Phase == "" || m.Status.Phase == v1.PhasePending:
		return "the source was not touched yet; the controller stops here"
	}
	return fmt.Sprintf("the controller rolls back from %s: it removes the target pod and resumes the source, which keeps its state and loses no message", m.Status.Phase)
}
