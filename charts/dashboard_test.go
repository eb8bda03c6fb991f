package charts_test

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"

	"github.com/ms2m/ms2m/pkg/controllers/migration"
)

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID         int             `json:"id"`
		Title      string          `json:"title"`
		Datasource *grafanaDSRef   `json:"datasource"`
		Targets    []grafanaTarget `json:"targets"`
	} `json:"panels"`
}

type grafanaDSRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type grafanaTarget struct {
	RefID      string        `json:"refId"`
	Expr       string        `json:"expr"`
	Datasource *grafanaDSRef `json:"datasource"`
}

const dashboardConfigMap = release + "-dashboard"

// renderedDashboard is the dashboard in the ConfigMap of the chart with
// every optional component on.
func renderedDashboard(t *testing.T) dashboard {
	t.Helper()
	cm := as(t, objs(t).get(t, "ConfigMap", dashboardConfigMap), &corev1.ConfigMap{})
	var d dashboard
	if err := json.Unmarshal([]byte(cm.Data["ms2m.json"]), &d); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	return d
}

func TestGrafanaDashboardConfigMap(t *testing.T) {
	file, err := os.ReadFile(filepath.Join(chartDir(), "dashboards", "ms2m.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name         string
		values       []string
		rendered     bool
		label, value string
		namespace    string
		annotations  map[string]string
	}{
		{name: "off by default", rendered: false},
		{
			name: "on: labelled for Grafana's dashboard sidecar, in the release namespace", values: everythingOn(),
			rendered: true, label: "grafana_dashboard", value: "1", namespace: namespace,
		},
		{
			name: "label, namespace and folder annotation as set",
			values: []string{"--set", "metrics.grafanaDashboard.enabled=true,metrics.grafanaDashboard.label=grafana_dashboards," +
				"metrics.grafanaDashboard.labelValue=ms2m,metrics.grafanaDashboard.namespace=monitoring",
				"--set-string", "metrics.grafanaDashboard.annotations.grafana_folder=Kafka migrations"},
			rendered: true, label: "grafana_dashboards", value: "ms2m", namespace: "monitoring",
			annotations: map[string]string{"grafana_folder": "Kafka migrations"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := render(t, tc.values...)
			var found []*corev1.ConfigMap
			for _, u := range objs.ofKind("ConfigMap") {
				if u.GetName() == dashboardConfigMap {
					found = append(found, as(t, u, &corev1.ConfigMap{}))
				}
			}
			if !tc.rendered {
				if len(found) > 0 {
					t.Fatalf("the dashboard ConfigMap is rendered though metrics.grafanaDashboard.enabled is false")
				}
				return
			}
			if len(found) != 1 {
				t.Fatalf("want one ConfigMap %s, rendered %d", dashboardConfigMap, len(found))
			}
			cm := found[0]
			if got := cm.Labels[tc.label]; got != tc.value {
				t.Errorf("label %s=%q; Grafana's sidecar looks for %q (labels %v)", tc.label, got, tc.value, cm.Labels)
			}
			if cm.Namespace != tc.namespace {
				t.Errorf("in namespace %q, want %q", cm.Namespace, tc.namespace)
			}
			for k, v := range tc.annotations {
				if cm.Annotations[k] != v {
					t.Errorf("annotation %s=%q, want %q", k, cm.Annotations[k], v)
				}
			}
			if len(cm.Data) != 1 {
				t.Errorf("want one dashboard in the ConfigMap, keys %v", slices.Collect(maps.Keys(cm.Data)))
			}
			got := cm.Data["ms2m.json"]
			if !json.Valid([]byte(got)) {
				t.Fatalf("ms2m.json is not valid JSON")
			}
			if got != strings.TrimRight(string(file), "\n") {
				t.Errorf("ms2m.json differs from charts/ms2m/dashboards/ms2m.json")
			}
		})
	}
}

// Builtin Grafana variables the queries may use besides the dashboard's.
var grafanaBuiltins = []string{"__rate_interval", "__range", "__interval"}

var grafanaVarRef = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)`)

// The dashboard loads as the ms2m dashboard, asks for the Prometheus data
// source, and every panel queries it.
func TestGrafanaDashboardIsWellFormed(t *testing.T) {
	d := renderedDashboard(t)
	if d.UID != "ms2m" || d.Title != "ms2m migrations" {
		t.Errorf("uid %q, title %q; want ms2m, ms2m migrations", d.UID, d.Title)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: Grafana would migrate it on load", d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" || vars["namespace"] != "query" {
		t.Errorf("template variables %v; want datasource (a data source) and namespace (a query)", vars)
	}
	for _, v := range d.Templating.List {
		if v.Name == "datasource" && v.Query != "prometheus" {
			t.Errorf("the datasource variable lists %v data sources, not prometheus", v.Query)
		}
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel %q: id %d is not unique", p.Title, p.ID)
		}
		ids[p.ID] = true
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the datasource variable: %+v", p.Title, p.Datasource)
		}
		refIDs := map[string]bool{}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q: query %s has no expr", p.Title, tg.RefID)
			}
			if tg.RefID == "" || refIDs[tg.RefID] {
				t.Errorf("panel %q: refId %q is empty or not unique", p.Title, tg.RefID)
			}
			refIDs[tg.RefID] = true
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" || tg.Datasource.Type != "prometheus" {
				t.Errorf("panel %q: query %s does not use the datasource variable: %+v", p.Title, tg.RefID, tg.Datasource)
			}
			for _, m := range grafanaVarRef.FindAllStringSubmatch(tg.Expr, -1) {
				if _, ok := vars[m[1]]; !ok && !slices.Contains(grafanaBuiltins, m[1]) {
					t.Errorf("panel %q: query %s uses $%s, which the dashboard does not define", p.Title, tg.RefID, m[1])
				}
			}
		}
	}
}

// Every metric a dashboard query names is one ms2m exports, queried as
// Prometheus stores it: a histogram only as name_bucket, name_sum or
// name_count. A renamed or misspelt metric leaves a panel empty without
// an error in Grafana; here it fails.
func TestGrafanaDashboardQueriesOnlyExportedMetrics(t *testing.T) {
	known := exportedMetrics(t)
	for _, p := range renderedDashboard(t).Panels {
		for _, tg := range p.Targets {
			refs := metricRef.FindAllString(tg.Expr, -1)
			if len(refs) == 0 {
				t.Errorf("panel %q: query %s names no ms2m metric: %s", p.Title, tg.RefID, tg.Expr)
			}
			for _, ref := range refs {
				if problem := queryable(known, ref); problem != "" {
					t.Errorf("panel %q: query %s: %s %s", p.Title, tg.RefID, ref, problem)
				}
			}
		}
	}
}

// queryable says what is wrong with querying the series ref, or "".
func queryable(known map[string]metricKind, ref string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(ref, suffix); ok && known[base] == histogram {
			return ""
		}
	}
	switch known[ref] {
	case plain:
		return ""
	case histogram:
		return "is a histogram: Prometheus has only its _bucket, _sum and _count series"
	}
	return "is not a metric ms2m exports"
}

// The dashboard shows every histogram the migration controller exports:
// the downtime and each of its stalls (checkpoint pause, handover), the
// phases, the checkpoint size. A new one fails here until it has a panel.
func TestGrafanaDashboardShowsEveryMigrationHistogram(t *testing.T) {
	shown := map[string]bool{}
	for _, p := range renderedDashboard(t).Panels {
		for _, tg := range p.Targets {
			for _, ref := range metricRef.FindAllString(tg.Expr, -1) {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					ref = strings.TrimSuffix(ref, suffix)
				}
				shown[ref] = true
			}
		}
	}
	hs := histograms(t, migration.NewMetrics(prometheus.NewRegistry()))
	if !slices.Contains(hs, "ms2m_migration_downtime_seconds") {
		t.Fatalf("found the migration controller's histograms %v, without the downtime: the enumeration is broken", hs)
	}
	for _, name := range hs {
		if !shown[name] {
			t.Errorf("the dashboard does not show the migration histogram %s", name)
		}
	}
}
