package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migrationclient"
)

// options are shared by every subcommand: where the cluster is (the
// standard kubectl flags) and where output goes.
type options struct {
	config  *genericclioptions.ConfigFlags
	streams genericiooptions.IOStreams
	// now is the reader's clock: ages and how long the current phase has
	// lasted. Everything else comes from times in the status.
	now func() time.Time
}

// client connects to the cluster the flags name.
func (o *options) client() (client.WithWatch, error) {
	cfg, err := o.config.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	return migrationclient.New(cfg)
}

// namespace is the --namespace flag, or the kubeconfig context's.
func (o *options) namespace() (string, error) {
	ns, _, err := o.config.ToRawKubeConfigLoader().Namespace()
	return ns, err
}

// target is the namespace a command acts in and a client for it.
func (o *options) target() (string, client.WithWatch, error) {
	ns, err := o.namespace()
	if err != nil {
		return "", nil, err
	}
	c, err := o.client()
	return ns, c, err
}

// getMigration reads StatefulMigration name; notFound ends the message
// when there is none.
func getMigration(ctx context.Context, c client.Client, ns, name, notFound string) (*v1.StatefulMigration, error) {
	m := &v1.StatefulMigration{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, m); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("StatefulMigration %q not found in namespace %q%s", name, ns, notFound)
		}
		return nil, err
	}
	return m, nil
}

// tty reports whether output goes to a terminal, where a line may be
// redrawn in place.
func (o *options) tty() bool {
	f, ok := o.streams.Out.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func newRootCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &options{config: genericclioptions.NewConfigFlags(true), streams: streams, now: time.Now}
	root := &cobra.Command{
		Use:   "ms2m",
		Short: "Live-migrate stateful, Kafka-driven pods between nodes",
		Long: `kubectl ms2m starts, follows and cancels ms2m live migrations
(StatefulMigration objects): a pod is checkpointed with its memory, restored
on another node, replays the messages it missed and takes over at the exact
offset the source stopped at, so no message is lost or processed twice.`,
		Example: `  # Move pod orders-0 to node worker-2 and follow it until it ends
  kubectl ms2m migrate orders-0 --to worker-2 --wait

  # What migrations are there, in every namespace?
  kubectl ms2m list -A

  # Everything about one migration
  kubectl ms2m status orders-0-x7k2p`,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl ms2m"},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	o.config.AddFlags(root.PersistentFlags())
	root.AddCommand(
		newMigrateCommand(o),
		newStatusCommand(o),
		newListCommand(o),
		newCancelCommand(o),
	)
	return root
}

// run executes the command line args and returns the process's exit code:
// 0 on success, 1 on any error, including a migration that failed.
func run(ctx context.Context, args []string, streams genericiooptions.IOStreams) int {
	root := newRootCommand(streams)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		if meta.IsNoMatchError(err) {
			err = fmt.Errorf("%w: this cluster does not serve StatefulMigrations; is ms2m installed (helm install, see docs/kubectl-plugin.md)?", err)
		}
		fmt.Fprintf(streams.ErrOut, "error: %v\n", err)
		return 1
	}
	return 0
}
