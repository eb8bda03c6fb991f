// Command webhook-scope writes the webhooks' scopes (webhooks.Scopes: the
// namespaceSelector and the CEL matchConditions, which controller-gen's
// +kubebuilder:webhook marker cannot express) into the webhook
// configuration controller-gen generated. `make generate` runs it after
// controller-gen and before hack/chart-generate.sh copies the result into
// the chart, so the code, config/webhook and the chart hold one scope, and
// `make verify` fails when they drift.
//
//	go run ./hack/webhook-scope config/webhook/manifests.yaml
package main

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/ms2m/ms2m/webhooks"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: webhook-scope config/webhook/manifests.yaml")
		os.Exit(2)
	}
	if err := scope(os.Args[1], webhooks.Scopes()); err != nil {
		fmt.Fprintln(os.Stderr, "webhook-scope:", err)
		os.Exit(1)
	}
}

// scope rewrites the file in place. Every webhook in it must have a scope
// and every scope a webhook: a new webhook is not registered for the whole
// cluster by omission.
func scope(path string, scopes map[string]webhooks.Scope) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	seen := map[string]bool{}
	for doc := range strings.SplitSeq(string(raw), "\n---\n") {
		doc = strings.TrimPrefix(doc, "---\n")
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		hooks, _ := obj["webhooks"].([]any)
		for _, h := range hooks {
			hook, _ := h.(map[string]any)
			name, _ := hook["name"].(string)
			s, ok := scopes[name]
			if !ok {
				return fmt.Errorf("%s: webhook %q has no scope in webhooks.Scopes", path, name)
			}
			seen[name] = true
			delete(hook, "namespaceSelector")
			delete(hook, "matchConditions")
			if s.NamespaceSelector != nil {
				sel, err := runtime.DefaultUnstructuredConverter.ToUnstructured(s.NamespaceSelector)
				if err != nil {
					return err
				}
				hook["namespaceSelector"] = sel
			}
			if len(s.MatchConditions) > 0 {
				var conds []any
				for i := range s.MatchConditions {
					c, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&s.MatchConditions[i])
					if err != nil {
						return err
					}
					conds = append(conds, c)
				}
				hook["matchConditions"] = conds
			}
		}
		b, err := yaml.Marshal(obj)
		if err != nil {
			return err
		}
		out.WriteString("---\n")
		out.Write(b)
	}
	for name := range scopes {
		if !seen[name] {
			return fmt.Errorf("%s: no webhook %q for its scope in webhooks.Scopes (renamed?)", path, name)
		}
	}
	if slices.Equal(out.Bytes(), raw) {
		return nil
	}
	return os.WriteFile(path, out.Bytes(), 0o644) //nolint:gosec // a generated file in the repository
}
