package scheduler

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
)

// FuzzExtender sends arbitrary bodies to both verbs. Whatever arrives, the
// extender answers 200 with a well-formed result that only names nodes of
// the request, or a 4xx; it never panics or answers 5xx. Without -fuzz it
// runs the seeds as a normal test.
func FuzzExtender(f *testing.F) {
	pv, pvc := localVolume("pv-local", "data", "good")
	st := NewCacheFrom(testNode("src"), testNode("good"), testNode("incapable", withoutLabel("ms2m.io/checkpoint-restore")), pv, pvc)
	ext := NewExtender(st, logr.Discard())
	ext.MaxRequestBytes = 64 << 10

	seed := func(v any) {
		b, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(namesArgs(testPod("p", migratingFrom("src"), withClaim("state", "data")), "src", "good", "incapable", "ghost", "good"))
	seed(&extenderv1.ExtenderArgs{Pod: testPod("p", migratingFrom("src")), Nodes: &corev1.NodeList{Items: []corev1.Node{*testNode("good"), {}}}})
	seed(&extenderv1.ExtenderArgs{Pod: &corev1.Pod{}, NodeNames: &[]string{}})
	f.Add([]byte(`{"Pod":{"metadata":{"annotations":{"migration.ms2m.io/source-node":"src"}},"spec":{"volumes":[{"name":"v","ephemeral":{}}]}},"NodeNames":["good",""]}`))
	f.Add([]byte(`{"Pod":{"spec":{"containers":[{"resources":{"requests":{"cpu":"1e100"}}}]}},"Nodes":{"items":[{"status":{"nodeInfo":{"kernelVersion":"999999999999.1"}}}]}}`))
	f.Add([]byte(`{"Pod":null,"NodeNames":null}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"Pod":{}}{}`))
	f.Add([]byte{0xff, 0xfe})
	f.Add([]byte(`{"nodenames":["a\u0062","c\"d",""],"pod":{},"NODENAMES":null,"Extra":{"x":[1,2,{"y":"]"}]}}`))
	f.Add([]byte(`{"NodeNames":["\xff","\ud800"],"Pod":{}}`))
	f.Add([]byte("{\"NodeNames\":[\"caf\xc3\xa9\",\"\xff\"],\"Pod\":{}}"))

	f.Fuzz(func(t *testing.T, body []byte) {
		var in extenderv1.ExtenderArgs
		stdErr := json.Unmarshal(body, &in)
		// The hand-written decoder accepts only what encoding/json accepts,
		// and reads the same node names.
		if got, err := decodeArgs(body); err == nil {
			if stdErr != nil {
				t.Fatalf("decodeArgs accepted what encoding/json refuses (%v)", stdErr)
			}
			if (got.NodeNames == nil) != (in.NodeNames == nil) || got.NodeNames != nil && !slices.Equal(*got.NodeNames, *in.NodeNames) {
				t.Fatalf("NodeNames %v; encoding/json reads %v", got.NodeNames, in.NodeNames)
			}
			if (got.Pod == nil) != (in.Pod == nil) || (got.Nodes == nil) != (in.Nodes == nil) {
				t.Fatalf("Pod/Nodes presence differs from encoding/json")
			}
		}
		asked := map[string]bool{}
		if in.NodeNames != nil {
			for _, n := range *in.NodeNames {
				asked[n] = true
			}
		}
		if in.Nodes != nil {
			for _, n := range in.Nodes.Items {
				asked[n.Name] = true
			}
		}
		for _, path := range []string{FilterPath, PrioritizePath} {
			req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
			rec := httptest.NewRecorder()
			ext.ServeHTTP(rec, req)
			switch {
			case rec.Code >= 400 && rec.Code < 500:
				continue
			case rec.Code != http.StatusOK:
				t.Fatalf("%s answered %d: %s", path, rec.Code, rec.Body)
			}
			if path == FilterPath {
				var res extenderv1.ExtenderFilterResult
				if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil {
					t.Fatalf("filter result is not JSON: %v", err)
				}
				var passed []string
				if res.NodeNames != nil {
					passed = *res.NodeNames
				}
				if res.Nodes != nil {
					for _, n := range res.Nodes.Items {
						passed = append(passed, n.Name)
					}
				}
				for _, m := range []extenderv1.FailedNodesMap{res.FailedNodes, res.FailedAndUnresolvableNodes} {
					for n := range m {
						passed = append(passed, n)
					}
				}
				for _, n := range passed {
					if !asked[n] {
						t.Fatalf("filter names node %q the request did not", n)
					}
				}
				continue
			}
			var list extenderv1.HostPriorityList
			if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil {
				t.Fatalf("prioritize result is not JSON: %v", err)
			}
			for _, h := range list {
				if !asked[h.Host] || h.Score < extenderv1.MinExtenderPriority || h.Score > extenderv1.MaxExtenderPriority {
					t.Fatalf("prioritize answered %+v", h)
				}
			}
		}
	})
}
