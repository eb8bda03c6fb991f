package scheduler

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// BenchmarkFilterPrioritize5000Nodes is one scheduling cycle as the
// scheduler drives it in nodeCacheCapable mode: a filter request naming
// 5,000 nodes, then a prioritize request naming those that passed, each
// decoded from and encoded to JSON through the handler. The cache holds
// 10 bound pods per node, 20 node images, and migrations in flight; one node
// in ten cannot restore, one in fifty is cordoned. p99-ms is the 99th
// percentile of one cycle (filter + prioritize); filter-p99-ms and
// prioritize-p99-ms split it.
func BenchmarkFilterPrioritize5000Nodes(b *testing.B) {
	const nodes = 5000
	names := nodeNames("node", nodes)
	objs := make([]client.Object, 0, nodes*11+100)
	for i, name := range names {
		opts := []nodeOption{withZone(fmt.Sprintf("r%d", i%3), fmt.Sprintf("r%d-%c", i%3, 'a'+i%4))}
		for j := range 20 {
			opts = append(opts, withImages(fmt.Sprintf("registry.example.com/team/app-%d:v%d", j, i%7)))
		}
		switch {
		case i%10 == 0:
			opts = append(opts, withoutLabel(v1.LabelCheckpointRestore))
		case i%50 == 1:
			opts = append(opts, cordoned())
		}
		objs = append(objs, testNode(name, opts...))
		for j := range 10 {
			objs = append(objs, testPod(fmt.Sprintf("%s-pod-%d", name, j), boundTo(name), withRequests("100m", "256Mi")))
		}
	}
	for i := range 100 {
		objs = append(objs, migration(fmt.Sprintf("m-%d", i), names[i*7], v1.PhaseReplaying))
	}
	ext := NewExtender(NewCacheFrom(objs...), logr.Discard())
	pod := testPod("target", migratingFrom(names[1]), ofMigration("m-0"), withBaseImages("registry.example.com/team/app-3:v2"))
	filterBody := mustJSON(b, namesArgs(pod, names...))

	var cycle, filterT, prioT []time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		rec := post(b, ext, FilterPath, filterBody)
		t1 := time.Now()
		if rec.Code != http.StatusOK {
			b.Fatalf("filter: %d %s", rec.Code, rec.Body)
		}
		// The scheduler sends the survivors; decoding the filter result is
		// its work, not the extender's, so it is outside the timings.
		b.StopTimer()
		passed := passedNames(b, rec.Body.Bytes())
		prioBody := mustJSON(b, namesArgs(pod, passed...))
		b.StartTimer()
		t2 := time.Now()
		rec = post(b, ext, PrioritizePath, prioBody)
		t3 := time.Now()
		if rec.Code != http.StatusOK {
			b.Fatalf("prioritize: %d %s", rec.Code, rec.Body)
		}
		filterT = append(filterT, t1.Sub(t0))
		prioT = append(prioT, t3.Sub(t2))
		cycle = append(cycle, t1.Sub(t0)+t3.Sub(t2))
	}
	b.ReportMetric(pctMs(cycle, 50), "p50-ms")
	b.ReportMetric(p99ms(cycle), "p99-ms")
	b.ReportMetric(p99ms(filterT), "filter-p99-ms")
	b.ReportMetric(p99ms(prioT), "prioritize-p99-ms")
}

func passedNames(b *testing.B, body []byte) []string {
	var res extenderv1.ExtenderFilterResult
	if err := json.Unmarshal(body, &res); err != nil || res.NodeNames == nil {
		b.Fatalf("filter result: %v", err)
	}
	return *res.NodeNames
}

func p99ms(d []time.Duration) float64 { return pctMs(d, 99) }

// pctMs is the pct-th percentile (nearest rank) in milliseconds.
func pctMs(d []time.Duration, pct int) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[(pct*len(s)+99)/100-1]) / float64(time.Millisecond)
}
