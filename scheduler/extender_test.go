package scheduler

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

func testExtender() *Extender {
	return NewExtender(NewCacheFrom(
		testNode("src"),
		testNode("good"),
		testNode("cordoned", cordoned()),
		testNode("incapable", withoutLabel(v1.LabelCheckpointRestore)),
	), logr.Discard())
}

func post(t testing.TB, h http.Handler, path string, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func namesArgs(pod *corev1.Pod, names ...string) *extenderv1.ExtenderArgs {
	return &extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names}
}

func TestFilterWithNodeNames(t *testing.T) {
	rec := post(t, testExtender(), FilterPath, mustJSON(t, namesArgs(testPod("p", migratingFrom("src")), "src", "good", "cordoned", "incapable", "new-node")))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var res extenderv1.ExtenderFilterResult
	if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	if res.NodeNames == nil || !slices.Equal(*res.NodeNames, []string{"good"}) || res.Nodes != nil {
		t.Fatalf("passed = %v / %v; want names [good] only (the scheduler asked by name)", res.NodeNames, res.Nodes)
	}
	wantUnresolvable := map[string]string{"src": ReasonSourceNode, "incapable": ReasonCheckpointRestoreUnsupported}
	wantFailed := map[string]string{"cordoned": ReasonNodeUnschedulable, "new-node": ReasonUnknownNode}
	expectReasons(t, "FailedAndUnresolvableNodes", res.FailedAndUnresolvableNodes, wantUnresolvable)
	expectReasons(t, "FailedNodes", res.FailedNodes, wantFailed)
	if res.Error != "" {
		t.Errorf("error %q", res.Error)
	}
}

func expectReasons(t *testing.T, what string, got extenderv1.FailedNodesMap, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s = %v; want nodes %v", what, got, want)
	}
	for node, reason := range want {
		if !strings.HasPrefix(got[node], "ms2m "+reason+": ") {
			t.Errorf("%s[%s] = %q; want reason %s", what, node, got[node], reason)
		}
	}
}

func TestFilterWithNodeObjects(t *testing.T) {
	// Without nodeCacheCapable the scheduler's node objects are authoritative:
	// "stale" is restore-capable in the request though not in the cache.
	args := &extenderv1.ExtenderArgs{Pod: testPod("p"), Nodes: &corev1.NodeList{Items: []corev1.Node{
		*testNode("good"), *testNode("incapable", withoutLabel(v1.LabelCheckpointRestore)), *testNode("stale"), *testNode("down", notReady()),
	}}}
	rec := post(t, testExtender(), FilterPath, mustJSON(t, args))
	var res extenderv1.ExtenderFilterResult
	if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("status %d, %v: %s", rec.Code, err, rec.Body)
	}
	if res.Nodes == nil || res.NodeNames != nil {
		t.Fatalf("want node objects back, got names %v", res.NodeNames)
	}
	var got []string
	for _, n := range res.Nodes.Items {
		got = append(got, n.Name)
	}
	if !slices.Equal(got, []string{"good", "stale"}) {
		t.Errorf("passed %v; want [good stale]", got)
	}
	if res.Nodes.Items[0].Labels[v1.LabelCRIUVersion] == "" {
		t.Error("returned node objects lost their content")
	}
	expectReasons(t, "FailedAndUnresolvableNodes", res.FailedAndUnresolvableNodes, map[string]string{"incapable": ReasonCheckpointRestoreUnsupported})
	expectReasons(t, "FailedNodes", res.FailedNodes, map[string]string{"down": ReasonNodeNotReady})
}

func TestPrioritizeScoresInRequestOrder(t *testing.T) {
	ext := NewExtender(NewCacheFrom(
		testNode("src", withZone("r1", "r1-a")),
		testNode("far", withZone("r2", "r2-a")),
		testNode("near", withZone("r1", "r1-a")),
	), logr.Discard())
	for _, args := range []*extenderv1.ExtenderArgs{
		namesArgs(testPod("p", migratingFrom("src")), "far", "near", "ghost"),
		{Pod: testPod("p", migratingFrom("src")), Nodes: &corev1.NodeList{Items: []corev1.Node{
			*testNode("far", withZone("r2", "r2-a")), *testNode("near", withZone("r1", "r1-a")), *testNode("ghost", withAllocatable("0", "0")),
		}}},
	} {
		rec := post(t, ext, PrioritizePath, mustJSON(t, args))
		var list extenderv1.HostPriorityList
		if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil || rec.Code != http.StatusOK {
			t.Fatalf("status %d, %v: %s", rec.Code, err, rec.Body)
		}
		if len(list) != 3 || list[0].Host != "far" || list[1].Host != "near" || list[2].Host != "ghost" {
			t.Fatalf("hosts %+v; want the request's order", list)
		}
		if list[1].Score <= list[0].Score {
			t.Errorf("near (same zone as the source) scores %d, far %d", list[1].Score, list[0].Score)
		}
		for _, h := range list {
			if h.Score < extenderv1.MinExtenderPriority || h.Score > extenderv1.MaxExtenderPriority {
				t.Errorf("%s scores %d, outside 0..10", h.Host, h.Score)
			}
		}
	}
}

func TestBadRequestsGet4xx(t *testing.T) {
	valid := mustJSON(t, namesArgs(testPod("p"), "good"))
	cases := []struct {
		name   string
		method string
		path   string
		ctype  string
		body   []byte
		want   int
	}{
		{"not JSON", http.MethodPost, FilterPath, "application/json", []byte("{nodes: all"), http.StatusBadRequest},
		{"empty body", http.MethodPost, FilterPath, "application/json", nil, http.StatusBadRequest},
		{"no pod", http.MethodPost, FilterPath, "application/json", []byte(`{"NodeNames":["good"]}`), http.StatusBadRequest},
		{"no nodes", http.MethodPost, PrioritizePath, "application/json", []byte(`{"Pod":{"metadata":{"name":"p"}}}`), http.StatusBadRequest},
		{"wrong types", http.MethodPost, FilterPath, "application/json", []byte(`{"Pod":[],"NodeNames":"good"}`), http.StatusBadRequest},
		{"two objects", http.MethodPost, FilterPath, "application/json", append(valid, valid...), http.StatusBadRequest},
		{"oversized", http.MethodPost, FilterPath, "application/json", bytes.Repeat([]byte(" "), 2<<10), http.StatusRequestEntityTooLarge},
		{"GET", http.MethodGet, FilterPath, "", nil, http.StatusMethodNotAllowed},
		{"form post", http.MethodPost, FilterPath, "application/x-www-form-urlencoded", valid, http.StatusUnsupportedMediaType},
		{"unknown verb", http.MethodPost, "/bind", "application/json", valid, http.StatusNotFound},
		{"valid, for contrast", http.MethodPost, FilterPath, "application/json; charset=utf-8", valid, http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var logged []string
			ext := testExtender()
			ext.MaxRequestBytes = 1 << 10
			ext.Log = logr.New(&recordingSink{lines: &logged})
			req := httptest.NewRequest(tc.method, tc.path, bytes.NewReader(tc.body))
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			rec := httptest.NewRecorder()
			ext.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("status %d; want %d (%s)", rec.Code, tc.want, rec.Body)
			}
			if tc.want != http.StatusOK && len(logged) == 0 {
				t.Error("refused without logging why")
			}
		})
	}
}

// recordingSink keeps the messages of Info calls.
type recordingSink struct{ lines *[]string }

func (s *recordingSink) Init(logr.RuntimeInfo)            {}
func (s *recordingSink) Enabled(level int) bool           { return level == 0 }
func (s *recordingSink) Info(_ int, msg string, _ ...any) { *s.lines = append(*s.lines, msg) }
func (s *recordingSink) Error(error, string, ...any)      {}
func (s *recordingSink) WithValues(...any) logr.LogSink   { return s }
func (s *recordingSink) WithName(string) logr.LogSink     { return s }

// The handler writes the filter's answer itself rather than encoding
// Filter's result; the two must agree, in both request forms, also when
// the request repeats a node.
func TestFilterAnswerDecodesToFiltersResult(t *testing.T) {
	pod := testPod("p", migratingFrom("src"))
	for name, args := range map[string]*extenderv1.ExtenderArgs{
		"names": namesArgs(pod, "src", "good", "cordoned", "incapable", "new-node", "good", "incapable", "new-node"),
		"objects": {Pod: pod, Nodes: &corev1.NodeList{Items: []corev1.Node{
			*testNode("good"), *testNode("incapable", withoutLabel(v1.LabelCheckpointRestore)), *testNode("down", notReady()),
			*testNode("incapable", withoutLabel(v1.LabelCheckpointRestore)), *testNode("good"),
		}}},
	} {
		t.Run(name, func(t *testing.T) {
			ext := testExtender()
			rec := post(t, ext, FilterPath, mustJSON(t, args))
			var got extenderv1.ExtenderFilterResult
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != http.StatusOK {
				t.Fatalf("status %d, %v: %s", rec.Code, err, rec.Body)
			}
			if want := ext.Filter(args); !apiequality.Semantic.DeepEqual(&got, want) {
				t.Errorf("the handler answered\n%+v\nFilter returns\n%+v", got, *want)
			}
			for _, key := range []string{"incapable", "new-node"} {
				if n := bytes.Count(rec.Body.Bytes(), []byte(`"`+key+`":`)); n > 1 {
					t.Errorf("the answer names %s %d times in its maps; want once", key, n)
				}
			}
		})
	}
}

// Requests are served in parallel, each with buffers from a pool, while
// informer events change the cache: every answer must be its own
// request's. Run with -race.
func TestParallelRequestsGetTheirOwnAnswers(t *testing.T) {
	const clients = 4
	objs := []client.Object{testNode("src")}
	for i := range clients {
		objs = append(objs, testNode(fmt.Sprintf("good-%d", i)), testNode(fmt.Sprintf("incapable-%d", i), withoutLabel(v1.LabelCheckpointRestore)))
	}
	c := NewCacheFrom(objs...)
	ext := NewExtender(c, logr.Discard())
	var wg sync.WaitGroup
	for i := range clients {
		good, incapable, ghost := fmt.Sprintf("good-%d", i), fmt.Sprintf("incapable-%d", i), fmt.Sprintf("ghost-%d", i)
		body := mustJSON(t, namesArgs(testPod("p", migratingFrom("src")), "src", good, incapable, ghost))
		wg.Go(func() {
			for range 100 {
				rec := post(t, ext, FilterPath, body)
				var res extenderv1.ExtenderFilterResult
				if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil || res.NodeNames == nil {
					t.Errorf("filter: status %d, %v: %s", rec.Code, err, rec.Body)
					return
				}
				if !slices.Equal(*res.NodeNames, []string{good}) || len(res.FailedNodes) != 1 || res.FailedNodes[ghost] == "" ||
					len(res.FailedAndUnresolvableNodes) != 2 || res.FailedAndUnresolvableNodes["src"] == "" || res.FailedAndUnresolvableNodes[incapable] == "" {
					t.Errorf("client %s got another request's answer: %+v", good, res)
					return
				}
				rec = post(t, ext, PrioritizePath, body)
				var list extenderv1.HostPriorityList
				if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil || len(list) != 4 || list[1].Host != good || list[3].Host != ghost {
					t.Errorf("client %s: prioritize answered %s (%v)", good, rec.Body, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 200 {
			c.upsert(testNode(fmt.Sprintf("other-%d", i)))
			c.upsert(testPod(fmt.Sprintf("load-%d", i), boundTo("good-0"), withRequests("10m", "1Mi")))
			c.remove(testNode(fmt.Sprintf("other-%d", i/2)))
		}
	})
	wg.Wait()
}
