package charts_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	yamlv3 "go.yaml.in/yaml/v3"
)

// Every value in values.yaml has a comment saying what it does, and the
// schema describes exactly the values there are: none missing (a value
// the schema would refuse), none extra (a schema entry for nothing).
func TestEveryValueIsDocumentedAndInTheSchema(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(chartDir(), "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc yamlv3.Node
	if err := yamlv3.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	rawSchema, err := os.ReadFile(filepath.Join(chartDir(), "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(rawSchema, &schema); err != nil {
		t.Fatalf("values.schema.json: %v", err)
	}
	checkValues(t, "", doc.Content[0], schema)
}

func checkValues(t *testing.T, path string, values *yamlv3.Node, schema map[string]any) {
	t.Helper()
	props, _ := schema["properties"].(map[string]any)
	seen := map[string]bool{}
	for i := 0; i+1 < len(values.Content); i += 2 {
		key, value := values.Content[i], values.Content[i+1]
		p := strings.TrimPrefix(path+"."+key.Value, ".")
		seen[key.Value] = true
		sub, ok := props[key.Value].(map[string]any)
		if !ok {
			t.Errorf("values.schema.json has no property for %s", p)
			continue
		}
		// A group of values (a non-empty mapping the schema structures) is
		// documented by its members; resources, selectors and other
		// Kubernetes-shaped values are documented as one value.
		if value.Kind == yamlv3.MappingNode && len(value.Content) > 0 && sub["properties"] != nil && key.Value != "resources" {
			checkValues(t, p, value, sub)
			continue
		}
		if strings.TrimSpace(key.HeadComment) == "" {
			t.Errorf("values.yaml: %s (line %d) has no comment above it", p, key.Line)
		}
		if d, _ := sub["description"].(string); d == "" {
			t.Errorf("values.schema.json: %s has no description", p)
		}
	}
	for name := range props {
		if !seen[name] {
			t.Errorf("values.schema.json describes %s, which values.yaml does not have", strings.TrimPrefix(path+"."+name, "."))
		}
	}
}
