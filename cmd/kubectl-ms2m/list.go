package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migrationclient"
)

type listOptions struct {
	*options
	allNamespaces bool
	output        outputFlag
}

func newListCommand(root *options) *cobra.Command {
	o := &listOptions{options: root}
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List migrations",
		Long: `List the StatefulMigrations of the current namespace (or of all
namespaces with -A) as a table: phase, source pod and node, target node,
downtime, replay lag while the target catches up, and age.`,
		Example: `  # Migrations in the current namespace
  kubectl ms2m list

  # In every namespace
  kubectl ms2m list -A

  # As the API serves them
  kubectl ms2m list -o yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.output.validate(); err != nil {
				return err
			}
			return o.run(cmd.Context())
		},
	}
	cmd.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "list migrations in every namespace")
	addOutputFlag(cmd, &o.output)
	return cmd
}

func (o *listOptions) run(ctx context.Context) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	var opts []client.ListOption
	ns := ""
	if !o.allNamespaces {
		if ns, err = o.namespace(); err != nil {
			return err
		}
		opts = append(opts, client.InNamespace(ns))
	}
	list := &v1.StatefulMigrationList{}
	if err := c.List(ctx, list, opts...); err != nil {
		return err
	}
	if o.output != "" {
		return o.output.print(o.streams.Out, list)
	}
	if len(list.Items) == 0 {
		if o.allNamespaces {
			fmt.Fprintln(o.streams.ErrOut, "No migrations found.")
		} else {
			fmt.Fprintf(o.streams.ErrOut, "No migrations found in %s namespace.\n", ns)
		}
		return nil
	}
	w := printers.GetNewTabWriter(o.streams.Out)
	header := "NAME\tPHASE\tSOURCE POD\tSOURCE NODE\tTARGET NODE\tDOWNTIME\tLAG\tAGE"
	if o.allNamespaces {
		header = "NAMESPACE\t" + header
	}
	fmt.Fprintln(w, header)
	for i := range list.Items {
		m := &list.Items[i]
		if o.allNamespaces {
			fmt.Fprintf(w, "%s\t", m.Namespace)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, orNone(string(m.Status.Phase)), m.Spec.SourcePod,
			orNone(m.Status.SourceNode), orNone(targetNode(m)), downtime(m), lag(m), duration.HumanDuration(o.now().Sub(m.CreationTimestamp.Time)))
	}
	return w.Flush()
}

// targetNode is the node chosen, or the one asked for until the
// controller has chosen.
func targetNode(m *v1.StatefulMigration) string {
	if m.Status.TargetNode != "" {
		return m.Status.TargetNode
	}
	return m.Spec.TargetNode
}

func downtime(m *v1.StatefulMigration) string {
	if m.Status.Downtime == nil {
		return "<none>"
	}
	return migrationclient.FormatDuration(m.Status.Downtime.Duration)
}

// lag is shown while the target replays; afterwards it means nothing.
func lag(m *v1.StatefulMigration) string {
	if m.Status.Replay == nil || m.Status.Phase.IsTerminal() || m.Status.Phase == v1.PhasePending {
		return "<none>"
	}
	return fmt.Sprint(m.Status.Replay.Lag)
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
