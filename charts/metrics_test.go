package charts_test

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/ms2m/ms2m/pkg/controllers/images"
	"github.com/ms2m/ms2m/pkg/controllers/migration"
	"github.com/ms2m/ms2m/pkg/manager"
	"github.com/ms2m/ms2m/pkg/replay"
)

// exportedMetrics are the Prometheus metrics ms2m exports, by name, as
// the code registers them: the migration controller's, the checkpoint-image
// controller's and the replay sidecar's metrics registered on fresh registries, their names read from
// the collectors' descriptors (Gather would leave out vectors without a
// child yet), and the manager's serving-certificate expiry gauge, which
// the manager registers when it starts. Histograms are marked: Prometheus
// stores them only as name_bucket, name_sum and name_count.
func exportedMetrics(t *testing.T) map[string]metricKind {
	t.Helper()
	known := map[string]metricKind{manager.CertExpiryMetric: plain}
	for _, metrics := range []any{
		migration.NewMetrics(recordingRegisterer{prometheus.NewRegistry(), t, known}),
		replay.NewMetrics(recordingRegisterer{prometheus.NewRegistry(), t, known}),
		images.NewMetrics(recordingRegisterer{prometheus.NewRegistry(), t, known}),
	} {
		for _, name := range histograms(t, metrics) {
			known[name] = histogram
		}
	}
	return known
}

// histograms are the names of the histograms among the fields of metrics,
// a pointer to a Metrics struct: a field declared as a histogram is one
// (its static type tells it from a summary, whose interface has the same
// methods).
func histograms(t *testing.T, metrics any) []string {
	t.Helper()
	var names []string
	v := reflect.ValueOf(metrics).Elem()
	for i := range v.NumField() {
		switch v.Type().Field(i).Type {
		case reflect.TypeFor[prometheus.Histogram](), reflect.TypeFor[*prometheus.HistogramVec]():
			names = append(names, descNames(t, v.Field(i).Interface().(prometheus.Collector))...)
		}
	}
	return names
}

type metricKind int

const (
	plain     metricKind = iota + 1 // counter or gauge: queried by its name
	histogram                       // queried as name_bucket, name_sum, name_count
)

// recordingRegisterer registers with a real registry (so a duplicate or
// inconsistent metric still fails) and records the collectors' names.
type recordingRegisterer struct {
	*prometheus.Registry
	t     *testing.T
	names map[string]metricKind
}

func (r recordingRegisterer) Register(c prometheus.Collector) error {
	if err := r.Registry.Register(c); err != nil {
		return err
	}
	for _, name := range descNames(r.t, c) {
		if _, ok := r.names[name]; !ok {
			r.names[name] = plain
		}
	}
	return nil
}

func (r recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			r.t.Fatal(err)
		}
	}
}

var descName = regexp.MustCompile(`^Desc\{fqName: "([^"]+)"`)

// descNames are the names of the metrics c describes (Desc has no getter
// for it; its String starts with it).
func descNames(t *testing.T, c prometheus.Collector) []string {
	t.Helper()
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	var names []string
	for d := range ch {
		m := descName.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read a metric name from %s", d)
		}
		names = append(names, m[1])
	}
	return names
}

// metricNames are the names of exportedMetrics.
func metricNames(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for name := range exportedMetrics(t) {
		names[name] = true
	}
	return names
}

// Every metric name in the code is one exportedMetrics finds: a metric
// registered somewhere it does not look (a new constructor) fails here
// instead of escaping the checks of the alerts, the docs and the dashboard.
func TestEveryMetricInTheCodeIsEnumerated(t *testing.T) {
	known := metricNames(t)
	re := regexp.MustCompile(`"(ms2m_[a-z0-9_]+)"`)
	var found int
	err := filepath.Walk(filepath.Join(repoRoot(), "pkg"), func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		for _, m := range re.FindAllSubmatch(b, -1) {
			found++
			if !known[string(m[1])] {
				rel, _ := filepath.Rel(repoRoot(), path)
				t.Errorf("%s names the metric %s, which the registries of exportedMetrics do not have", rel, m[1])
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if found == 0 {
		t.Fatal("found no ms2m_ metric in pkg/")
	}
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
