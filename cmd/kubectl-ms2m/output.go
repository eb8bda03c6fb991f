package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/printers"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migrationclient"
)

// outputFlag is -o: empty for the readable form, json or yaml for the
// object as the API serves it.
type outputFlag string

func addOutputFlag(cmd *cobra.Command, o *outputFlag) {
	cmd.Flags().StringVarP((*string)(o), "output", "o", "", "output format: json or yaml (default: readable text)")
}

func (o outputFlag) validate() error {
	switch o {
	case "", "json", "yaml":
		return nil
	}
	return fmt.Errorf("unknown output format %q: use -o json or -o yaml, or no -o for readable text", string(o))
}

var scheme = migrationclient.NewScheme()

// print writes obj as JSON or YAML with its apiVersion and kind, as kubectl
// get -o does; a list's items carry theirs too.
func (o outputFlag) print(w io.Writer, obj runtime.Object) error {
	var p printers.ResourcePrinter = &printers.JSONPrinter{}
	if o == "yaml" {
		p = &printers.YAMLPrinter{}
	}
	if list, ok := obj.(*v1.StatefulMigrationList); ok {
		for i := range list.Items {
			list.Items[i].SetGroupVersionKind(v1.GroupVersion.WithKind("StatefulMigration"))
		}
	}
	return printers.NewTypeSetter(scheme).ToPrinter(p).PrintObj(obj, w)
}
