package agent

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/clientconfig"
	"github.com/ms2m/ms2m/pkg/replay"
)

// The agent reads the sidecar's answers with its own small types (it does
// not link the sidecar): they must read what the sidecar writes, and its
// tokens must be for the sidecar's audience.
func TestControlAudienceIsTheSidecars(t *testing.T) {
	if got, want := controlAudience("shop", "uid-1"), replay.ControlAudience("shop", "uid-1"); got != want {
		t.Fatalf("the agent's audience %q, the sidecar's %q", got, want)
	}
	paused, resumed := time.Now(), time.Now().Add(20*time.Millisecond)
	b, err := json.Marshal(replay.Position{Paused: true, Checkpoint: map[int]int64{0: 7, 3: 9}, Assigned: []int{0, 3},
		PausedAt: &paused, ResumedAt: &resumed})
	if err != nil {
		t.Fatal(err)
	}
	var got sidecarPosition
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !got.Paused || got.Checkpoint[0] != 7 || got.Checkpoint[3] != 9 || !slices.Equal(got.Assigned, []int{0, 3}) ||
		got.PausedAt == nil || !got.PausedAt.Equal(paused) || got.ResumedAt == nil || !got.ResumedAt.Equal(resumed) {
		t.Fatalf("the agent read %+v from the sidecar's %s", got, b)
	}
}

// checkpointWorld is a FAKE source node: a kubelet and a replay sidecar
// that record, in order, what the agent asked of them.
type checkpointWorld struct {
	t       *testing.T
	r       *Reconciler
	api     client.WithWatch // the FAKE API server behind r
	m       *v1.StatefulMigration
	mu      sync.Mutex
	calls   []string
	audits  []string // the audience of each sidecar call's token
	kubelet func(w http.ResponseWriter)
	offsets string // what the sidecar's pause answers as O
	// pauseStatus, when set, is the sidecar's answer to a pause.
	pauseStatus int
}

func newCheckpointWorld(t *testing.T, podNode string) *checkpointWorld {
	w := &checkpointWorld{t: t, offsets: `{"0":120,"1":98}`}
	w.kubelet = func(rw http.ResponseWriter) {
		_, _ = rw.Write([]byte(`{"items":["` + DefaultCheckpointDir + `/checkpoint-orders_shop-app-2026-12-07T05:00:00Z.tar"]}`))
	}
	kubelet := httptest.NewTLSServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		w.record("checkpoint")
		w.kubelet(rw)
	}))
	t.Cleanup(kubelet.Close)
	paused := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	sidecar := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		w.audits = append(w.audits, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer token-for "))
		w.mu.Unlock()
		w.record(r.URL.Path)
		switch r.URL.Path {
		case "/pause":
			if w.pauseStatus != 0 {
				http.Error(rw, "FAKE sidecar says no", w.pauseStatus)
				return
			}
			_, _ = rw.Write([]byte(`{"mode":"live","paused":true,"checkpoint":` + w.offsets + `,"pausedAt":"` + paused.Format(time.RFC3339Nano) + `"}`))
		case "/resume":
			_, _ = rw.Write([]byte(`{"mode":"live","pausedAt":"` + paused.Format(time.RFC3339Nano) + `","resumedAt":"` + paused.Add(18*time.Millisecond).Format(time.RFC3339Nano) + `"}`))
		default:
			http.NotFound(rw, r)
		}
	}))
	t.Cleanup(sidecar.Close)
	khost, kport, _ := net.SplitHostPort(strings.TrimPrefix(kubelet.URL, "https://"))
	kp, _ := strconv.Atoi(kport)
	shost, sport, _ := net.SplitHostPort(strings.TrimPrefix(sidecar.URL, "http://"))
	sp, _ := strconv.Atoi(sport)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}, Status: corev1.NodeStatus{
		Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: khost}},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(kp)}},
	}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: "shop", UID: types.UID("uid-orders")},
		Spec:   corev1.PodSpec{NodeName: podNode, Containers: []corev1.Container{{Name: "app"}, {Name: v1.SidecarContainerName}}},
		Status: corev1.PodStatus{PodIP: shost}}
	w.m = &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: "move", Namespace: "shop"},
		Spec:   v1.StatefulMigrationSpec{SourcePod: "orders"},
		Status: v1.StatefulMigrationStatus{Phase: v1.PhaseCheckpointing, SourceNode: "node-1", SourceUID: pod.UID}}
	scheme, err := clientconfig.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	w.api = fake.NewClientBuilder().WithScheme(scheme).WithObjects(node, pod, w.m).Build()
	w.r = &Reconciler{Client: w.api, Kubelet: kubelet.Client(),
		Opts: Options{NodeName: "node-1", SidecarControlPort: int32(sp),
			SidecarTokens: func(_ context.Context, audience string) (string, error) { return "token-for " + audience, nil }}}
	return w
}

func (w *checkpointWorld) record(call string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls = append(w.calls, call)
}

func (w *checkpointWorld) reconcile() (reconcile.Result, v1.AgentResult, bool) {
	w.t.Helper()
	res, err := w.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(w.m)})
	if err != nil {
		w.t.Fatal(err)
	}
	m := &v1.StatefulMigration{}
	if err := w.api.Get(context.Background(), client.ObjectKeyFromObject(w.m), m); err != nil {
		w.t.Fatal(err)
	}
	raw, ok := m.Annotations[v1.AnnotationAgentCheckpoint]
	var report v1.AgentResult
	if ok {
		if err := json.Unmarshal([]byte(raw), &report); err != nil {
			w.t.Fatal(err)
		}
	}
	return res, report, ok
}

func (w *checkpointWorld) called() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.calls)
}

// The agent, not the controller, brackets the checkpoint with the pause:
// the source's sidecar is paused, the kubelet checkpoints, the sidecar is
// resumed the moment the kubelet answers, and only then is anything
// reported: O as the pause answered it and the pause by the sidecar's
// clock. Its tokens are for that sidecar's audience.
func TestThePauseBracketsTheCheckpointOnly(t *testing.T) {
	w := newCheckpointWorld(t, "node-1")
	_, report, ok := w.reconcile()
	if !ok || report.Error != "" {
		t.Fatalf("report %+v (%v)", report, ok)
	}
	if calls := w.called(); !slices.Equal(calls, []string{"/pause", "checkpoint", "/resume"}) {
		t.Fatalf("calls %v; want the pause, the checkpoint, the resume", calls)
	}
	if report.Offsets[0] != 120 || report.Offsets[1] != 98 || len(report.Offsets) != 2 || !strings.HasSuffix(report.Archive, ".tar") {
		t.Fatalf("report %+v; want the archive and O as the pause answered it", report)
	}
	if report.PausedAt == nil || report.ResumedAt == nil || report.ResumedAt.Sub(report.PausedAt.Time) != 18*time.Millisecond {
		t.Fatalf("report's pause %v → %v; want the sidecar's 18ms", report.PausedAt, report.ResumedAt)
	}
	// Where the pause went: each call inside it, timed.
	if st := report.Steps; st == nil || st.Attempts != 1 || st.Pause.Duration <= 0 || st.Checkpoint.Duration <= 0 || st.Resume.Duration <= 0 {
		t.Fatalf("report's steps %+v; want the pause, checkpoint (1 attempt) and resume calls timed", st)
	}
	for _, aud := range w.audits {
		if aud != "ms2m-replay/shop/uid-orders" {
			t.Fatalf("a sidecar call with a token for %q", aud)
		}
	}
}

// The agent checkpoints a migration once, even when its cache lags behind
// its own report (an event that came during the checkpoint requeues the
// migration at once): a second run would pause the source again in a later
// phase and replace the reported archive and O with a later checkpoint's.
func TestACheckpointIsTakenOnceWhateverTheCache(t *testing.T) {
	w := newCheckpointWorld(t, "node-1")
	stale := w.m.DeepCopy() // the cache as it was before the report
	w.r.APIReader = w.api
	w.r.Client = interceptor.NewClient(w.api, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if m, ok := obj.(*v1.StatefulMigration); ok {
				stale.DeepCopyInto(m)
				return nil
			}
			return c.Get(ctx, key, obj, opts...)
		},
	})
	_, first, ok := w.reconcile()
	if !ok || first.Error != "" {
		t.Fatalf("first report %+v (%v)", first, ok)
	}
	_, again, _ := w.reconcile()
	if calls := w.called(); !slices.Equal(calls, []string{"/pause", "checkpoint", "/resume"}) {
		t.Fatalf("calls %v after a second look from a stale cache; want one pause, checkpoint and resume", calls)
	}
	if !equality.Semantic.DeepEqual(first, again) {
		t.Fatalf("report %+v replaced by %+v", first, again)
	}
}

// StopAndCopy keeps the source stopped from its checkpoint: the agent
// leaves its sidecar paused after a checkpoint that succeeded, for the
// controller to fence where it paused, and reports when the pause began
// (no resume); after a checkpoint that failed it resumes it, as always.
func TestStopAndCopyLeavesTheSourcePaused(t *testing.T) {
	for name, kubeletFails := range map[string]bool{"checkpointed": false, "the kubelet fails": true} {
		t.Run(name, func(t *testing.T) {
			w := newCheckpointWorld(t, "node-1")
			m := &v1.StatefulMigration{}
			if err := w.r.Client.Get(context.Background(), client.ObjectKeyFromObject(w.m), m); err != nil {
				t.Fatal(err)
			}
			m.Status.Strategy = v1.StrategyStopAndCopy
			if err := w.r.Client.Update(context.Background(), m); err != nil {
				t.Fatal(err)
			}
			if kubeletFails {
				w.kubelet = func(rw http.ResponseWriter) { http.Error(rw, "dump failed", http.StatusInternalServerError) }
			}
			_, report, _ := w.reconcile()
			calls := w.called()
			if kubeletFails {
				if !slices.Equal(calls, []string{"/pause", "checkpoint", "/resume"}) || !strings.Contains(report.Error, "dump failed") {
					t.Fatalf("calls %v, report %+v; want the source resumed after the failed checkpoint, and the failure reported", calls, report)
				}
				return
			}
			if !slices.Equal(calls, []string{"/pause", "checkpoint"}) {
				t.Fatalf("calls %v; want the pause and the checkpoint, and no resume", calls)
			}
			if report.Error != "" || report.Offsets[0] != 120 || report.PausedAt == nil || report.ResumedAt != nil {
				t.Fatalf("report %+v; want O, the pause's start and no resume", report)
			}
		})
	}
}

// A failed checkpoint resumes the sidecar (the source serves on) and is
// reported; a pause with no offsets yet (no topic) is resumed and looked
// at again later, unreported; a source pod on another node is never
// paused.
func TestThePauseNeverOutlivesTheCheckpoint(t *testing.T) {
	t.Run("the kubelet fails", func(t *testing.T) {
		w := newCheckpointWorld(t, "node-1")
		w.kubelet = func(rw http.ResponseWriter) {
			http.Error(rw, "dump failed: vDSO mismatch", http.StatusInternalServerError)
		}
		_, report, ok := w.reconcile()
		if !ok || !strings.Contains(report.Error, "vDSO mismatch") {
			t.Fatalf("report %+v; want the kubelet's failure", report)
		}
		if calls := w.called(); !slices.Equal(calls, []string{"/pause", "checkpoint", "/resume"}) {
			t.Fatalf("calls %v; want the sidecar resumed after the failed checkpoint", calls)
		}
	})
	t.Run("nothing to record yet", func(t *testing.T) {
		w := newCheckpointWorld(t, "node-1")
		w.offsets = `{}`
		res, _, ok := w.reconcile()
		if ok || res.RequeueAfter == 0 {
			t.Fatalf("reported %v, requeue %v; want no report and another look later", ok, res)
		}
		if calls := w.called(); !slices.Equal(calls, []string{"/pause", "/resume"}) {
			t.Fatalf("calls %v; want the sidecar resumed, no checkpoint", calls)
		}
	})
	t.Run("the sidecar cannot answer for now (503: Kafka unreachable)", func(t *testing.T) {
		w := newCheckpointWorld(t, "node-1")
		w.pauseStatus = http.StatusServiceUnavailable
		res, _, ok := w.reconcile()
		if ok || res.RequeueAfter == 0 {
			t.Fatalf("reported %v, requeue %v; want no report and another try", ok, res)
		}
		if calls := w.called(); len(calls) < 2 || calls[0] != "/pause" || calls[1] != "/resume" || slices.Contains(calls, "checkpoint") {
			t.Fatalf("calls %v; want a resume after the failed pause, no checkpoint", calls)
		}
	})
	t.Run("the sidecar refuses the pause", func(t *testing.T) {
		w := newCheckpointWorld(t, "node-1")
		w.pauseStatus = http.StatusConflict
		_, report, ok := w.reconcile()
		if !ok || !strings.Contains(report.Error, "FAKE sidecar says no") {
			t.Fatalf("report %+v; want the refusal reported", report)
		}
	})
	t.Run("the source is on another node", func(t *testing.T) {
		w := newCheckpointWorld(t, "node-2")
		_, report, ok := w.reconcile()
		if !ok || !strings.Contains(report.Error, `runs on node "node-2"`) {
			t.Fatalf("report %+v; want it refused", report)
		}
		if calls := w.called(); len(calls) > 0 {
			t.Fatalf("calls %v; want none", calls)
		}
	})
}
