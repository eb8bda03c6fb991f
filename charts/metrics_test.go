package charts_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// metricNames are the Prometheus metrics the code registers.
func metricNames(t *testing.T) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`Name:\s*"(ms2m_[a-z0-9_]+)"`)
	names := map[string]bool{}
	err := filepath.Walk(filepath.Join(repoRoot(), "pkg"), func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		for _, m := range re.FindAllSubmatch(b, -1) {
			names[string(m[1])] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatal("found no ms2m_ metric in pkg/")
	}
	return names
}

var metricRef = regexp.MustCompile(`\bms2m_[a-z0-9_]+`)

func unknownMetrics(known map[string]bool, text string) []string {
	var unknown []string
	for _, ref := range metricRef.FindAllString(text, -1) {
		base := ref
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(ref, suffix); ok && known[b] {
				base = b
			}
		}
		if !known[base] && !slices.Contains(unknown, ref) {
			unknown = append(unknown, ref)
		}
	}
	return unknown
}

// Alerts and the operations guide name only metrics the code exports.
func TestAlertsAndOperationsDocUseRealMetrics(t *testing.T) {
	known := metricNames(t)
	rule := objs(t).get(t, "PrometheusRule", release)
	groups, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
	var exprs []string
	for _, g := range groups {
		rules, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
		for _, r := range rules {
			e, _, _ := unstructured.NestedString(r.(map[string]any), "expr")
			exprs = append(exprs, e)
		}
	}
	if u := unknownMetrics(known, strings.Join(exprs, "\n")); len(u) > 0 {
		t.Errorf("the PrometheusRule uses metrics the code does not export: %v", u)
	}
	doc, err := os.ReadFile(filepath.Join(repoRoot(), "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	if u := unknownMetrics(known, string(doc)); len(u) > 0 {
		t.Errorf("docs/operations.md names metrics the code does not export: %v", u)
	}
	for name := range known {
		if !strings.Contains(string(doc), name) {
			t.Errorf("docs/operations.md does not list the metric %s", name)
		}
	}
}
