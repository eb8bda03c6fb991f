package images

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kwait "k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ms2m/ms2m/internal/testenv"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/checkpoint"
)

var (
	env *testenv.Env
	api client.Client
	seq atomic.Int64
)

func TestMain(m *testing.M) {
	os.Exit(testenv.RunMain(m, &env, testenv.Options{}, func(e *testenv.Env) (func(), error) {
		var err error
		api, err = client.New(e.Config, client.Options{Scheme: e.Scheme})
		return func() {}, err
	}))
}

// world is a namespace, a registry holding checkpoint images, and the
// checkpoint-image controller running against the real API server with
// the given retention.
type world struct {
	t       *testing.T
	ns      string
	reg     string // host:port
	repo    string // the default checkpoint repository
	events  *record.FakeRecorder
	refuse  atomic.Bool // the registry answers every request 503
	deleted atomic.Int64
}

func newWorld(t *testing.T, retention Retention, giveUp time.Duration) *world {
	t.Helper()
	w := &world{t: t, ns: fmt.Sprintf("images-%d", seq.Add(1)), events: record.NewFakeRecorder(100)}
	w.events.IncludeObject = true
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if w.refuse.Load() {
			http.Error(rw, "registry unavailable", http.StatusServiceUnavailable)
			return
		}
		if r.Method == http.MethodDelete {
			w.deleted.Add(1)
		}
		inner.ServeHTTP(rw, r)
	}))
	t.Cleanup(srv.Close)
	w.reg = strings.TrimPrefix(srv.URL, "http://")
	w.repo = w.reg + "/checkpoints"
	if err := api.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: w.ns}}); err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	regs := checkpoint.NewRegistries(w.repo, nil, []string{w.reg})
	opts := DefaultOptions()
	opts.Retention, opts.DefaultRepository, opts.Registries, opts.GiveUpAfter, opts.Wait = retention, w.repo, regs, giveUp, 100*time.Millisecond
	r := &Reconciler{Client: mgr.GetClient(), Recorder: w.events, Opts: opts,
		Delete: func(ctx context.Context, ref name.Digest) error {
			return checkpoint.Delete(ctx, ref, regs.Transport(http.DefaultTransport))
		}}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	if err := (&FailedMigrations{Reconciler: r}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = mgr.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

// push puts a checkpoint image (an index of one image, as the agent
// pushes) in repo and returns its reference by digest.
func (w *world) push(repo, tag string) string {
	w.t.Helper()
	img, err := random.Image(4096, 1)
	if err != nil {
		w.t.Fatal(err)
	}
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img})
	ref, err := name.ParseReference(repo+":"+tag, name.Insecure)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		w.t.Fatal(err)
	}
	d, _ := idx.Digest()
	return ref.Context().Digest(d.String()).String()
}

func (w *world) exists(ref string) bool {
	w.t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		w.t.Fatal(err)
	}
	_, err = remote.Head(r)
	return err == nil
}

// migration creates a StatefulMigration in phase that recorded image.
func (w *world) migration(nm string, phase v1.Phase, image string) *v1.StatefulMigration {
	w.t.Helper()
	m := &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: nm}, Spec: v1.StatefulMigrationSpec{SourcePod: "orders-0"}}
	if err := api.Create(w.t.Context(), m); err != nil {
		w.t.Fatal(err)
	}
	m.Status.Phase, m.Status.CheckpointImage = phase, image
	if err := api.Status().Update(w.t.Context(), m); err != nil {
		w.t.Fatal(err)
	}
	return m
}

// restored creates a pod restored from image by migration, as the
// controller creates it (migratable.BuildTarget): annotated, with the
// finalizer.
func (w *world) restored(pod, migration, image string) *corev1.Pod {
	w.t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: pod,
			Annotations: map[string]string{v1.AnnotationCheckpointImage: image, v1.AnnotationMigrationName: migration},
			Finalizers:  []string{v1.FinalizerCheckpointImage}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
	}
	if err := api.Create(w.t.Context(), p); err != nil {
		w.t.Fatal(err)
	}
	return p
}

func (w *world) delete(p *corev1.Pod) {
	w.t.Helper()
	if err := api.Delete(w.t.Context(), p); err != nil {
		w.t.Fatal(err)
	}
}

// gone waits until the pod's deletion has finished.
func (w *world) gone(p *corev1.Pod, within time.Duration) {
	w.t.Helper()
	err := kwait.PollUntilContextTimeout(w.t.Context(), 20*time.Millisecond, within, true, func(ctx context.Context) (bool, error) {
		err := api.Get(ctx, client.ObjectKeyFromObject(p), &corev1.Pod{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	if err != nil {
		w.t.Fatalf("pod %s still exists (its finalizer was not removed): %v", p.Name, err)
	}
}

// held checks that the pod's deletion is held.
func (w *world) held(p *corev1.Pod) {
	w.t.Helper()
	got := &corev1.Pod{}
	if err := api.Get(w.t.Context(), client.ObjectKeyFromObject(p), got); err != nil {
		w.t.Fatalf("pod %s: %v; want it held by its finalizer", p.Name, err)
	}
	if got.DeletionTimestamp == nil {
		w.t.Fatalf("pod %s is not being deleted", p.Name)
	}
}

func (w *world) event(reason string) string {
	w.t.Helper()
	for {
		select {
		case e := <-w.events.Events:
			if strings.Contains(e, " "+reason+" ") {
				return e
			}
		case <-time.After(10 * time.Second):
			w.t.Fatalf("no %s Event", reason)
			return ""
		}
	}
}

// A checkpoint image (a process's whole memory) lives exactly as long as
// a pod runs from it: the restored pod's deletion waits until the manager
// deleted it from the registry, and not before the last such pod goes.
func TestACheckpointImageGoesWithTheLastPodRunningFromIt(t *testing.T) {
	w := newWorld(t, RetainNone, time.Minute)
	// The migration's own repository (spec.checkpointImageRepository),
	// not the default one: its record in status vouches for the image.
	image := w.push(w.reg+"/team/checkpoints", "orders-0-1a2b3c4d")
	other := w.push(w.repo, "orders-1-5e6f7a8b")
	w.migration("move", v1.PhaseCompleted, image)
	// A handed-over pod no longer names its migration.
	target := w.restored("orders-0-ms2m-1a2b3", "", image)
	twin := w.restored("orders-0-copy", "", image) // say, a copy a user made of the pod

	w.delete(target)
	w.gone(target, 10*time.Second)
	if e := w.event("CheckpointImageKept"); !strings.Contains(e, "orders-0-copy still runs from it") {
		t.Errorf("Event %q; want it to name the pod still running from the image", e)
	}
	if !w.exists(image) {
		t.Fatal("the image was deleted while a pod still runs from it")
	}

	w.delete(twin)
	w.gone(twin, 10*time.Second)
	if e := w.event("CheckpointImageDeleted"); !strings.Contains(e, image) || !strings.Contains(e, "kind=StatefulMigration") {
		t.Errorf("Event %q; want it on the migration, naming the image", e)
	}
	if w.exists(image) {
		t.Fatal("the image is still in the registry after the last pod running from it went")
	}
	if !w.exists(other) {
		t.Fatal("another migration's image was deleted")
	}
}

// A rollback deletes its target before it records the failure: the image
// waits for the migration's end, then goes, unless the retention keeps
// failed migrations' images for debugging.
func TestAFailedMigrationsImageGoesUnlessKeptForDebugging(t *testing.T) {
	for _, tc := range []struct {
		retention Retention
		kept      bool
	}{{RetainNone, false}, {RetainFailed, true}} {
		t.Run(string(tc.retention), func(t *testing.T) {
			w := newWorld(t, tc.retention, time.Minute)
			image := w.push(w.repo, "orders-0-1a2b3c4d")
			m := w.migration("move", v1.PhaseReplaying, image)
			target := w.restored("orders-0-ms2m-1a2b3", "move", image)
			w.delete(target)
			if e := w.event("CheckpointImageWaiting"); !strings.Contains(e, "migration move is Replaying") {
				t.Errorf("Event %q; want it to name the migration the image waits for", e)
			}
			w.held(target)
			m.Status.Phase = v1.PhaseFailed
			if err := api.Status().Update(t.Context(), m); err != nil {
				t.Fatal(err)
			}
			w.gone(target, 10*time.Second)
			if w.exists(image) != tc.kept {
				t.Fatalf("--checkpoint-image-retention=%s: image in the registry %v, want %v", tc.retention, !tc.kept, tc.kept)
			}
			if tc.kept {
				if e := w.event("CheckpointImageKept"); !strings.Contains(e, "keep-failed") {
					t.Errorf("Event %q; want it to name the retention", e)
				}
			}
		})
	}
}

// The annotation lives on a tenant's pod: what a tenant writes there
// cannot make the manager delete an image it cannot vouch for (outside
// the default checkpoint repository, with no migration recording it), nor
// one another pod runs from.
func TestAForgedAnnotationDeletesNothingElse(t *testing.T) {
	w := newWorld(t, RetainNone, time.Minute)
	app := w.push(w.reg+"/shop/orders", "v1") // an application image in the same registry
	victim := w.push(w.repo, "payments-0-9a8b7c6d")
	w.restored("payments-0-ms2m-9a8b7", "other-tenants-move", victim) // the victim's restored pod runs from it

	forged := w.restored("mine", "move-that-does-not-exist", app)
	w.delete(forged)
	w.gone(forged, 10*time.Second)
	if e := w.event("CheckpointImageKept"); !strings.Contains(e, "cannot vouch") {
		t.Errorf("Event %q; want it to say why the image was not deleted", e)
	}
	stolen := w.restored("mine-too", "move-that-does-not-exist", victim)
	w.delete(stolen)
	w.gone(stolen, 10*time.Second)
	if e := w.event("CheckpointImageKept"); !strings.Contains(e, "still runs from it") {
		t.Errorf("Event %q; want the image kept for the pod running from it", e)
	}
	if !w.exists(app) || !w.exists(victim) {
		t.Fatalf("a forged annotation deleted an image: application image there %v, victim's checkpoint there %v", w.exists(app), w.exists(victim))
	}
	if n := w.deleted.Load(); n != 0 {
		t.Fatalf("the registry received %d DELETE requests", n)
	}
}

// A registry that does not delete holds the pod's deletion for the
// deletion timeout only; then the pod goes, with a Warning that says the
// image is still there.
func TestARegistryThatDoesNotAnswerHoldsThePodForTheTimeoutOnly(t *testing.T) {
	w := newWorld(t, RetainNone, 2*time.Second)
	image := w.push(w.repo, "orders-0-1a2b3c4d")
	w.migration("move", v1.PhaseCompleted, image)
	target := w.restored("orders-0-ms2m-1a2b3", "move", image)
	w.refuse.Store(true)
	w.delete(target)
	w.held(target)
	w.gone(target, 30*time.Second)
	if e := w.event("CheckpointImageNotDeleted"); !strings.Contains(e, "registry's own retention") || !strings.Contains(e, "503") {
		t.Errorf("Event %q; want the registry's answer and what removes the image instead", e)
	}
	w.refuse.Store(false)
	if !w.exists(image) {
		t.Fatal("the image is gone, though the registry refused the delete")
	}
}

// A migration that failed before any pod ran from its image (or whose
// agent finished the push after the failure) does not leave the image
// behind.
func TestAFailedMigrationLeavesNoImageNoPodRanFrom(t *testing.T) {
	w := newWorld(t, RetainNone, time.Minute)
	recorded := w.push(w.repo, "orders-0-1a2b3c4d")
	late := w.push(w.repo, "orders-0-1a2b3c4d-late")
	other := w.push(w.repo, "orders-1-5e6f7a8b")
	m := &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: "move"}, Spec: v1.StatefulMigrationSpec{SourcePod: "orders-0"}}
	if err := api.Create(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	m.Status.Phase, m.Status.CheckpointImage = v1.PhaseFailed, recorded
	m.Status.CompletionTime = &metav1.Time{Time: time.Now()}
	if err := api.Status().Update(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	// The agent's report of a push that finished after the failure.
	patch := client.MergeFrom(m.DeepCopy())
	m.Annotations = map[string]string{v1.AnnotationAgentImage: `{"image":"` + late + `"}`}
	if err := api.Patch(t.Context(), m, patch); err != nil {
		t.Fatal(err)
	}
	err := kwait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		return !w.exists(recorded) && !w.exists(late), nil
	})
	if err != nil {
		t.Fatalf("a failed migration's images are still in the registry: recorded %v, reported late %v", w.exists(recorded), w.exists(late))
	}
	if !w.exists(other) {
		t.Fatal("an image of no failed migration was deleted")
	}
	if e := w.event("CheckpointImageDeleted"); !strings.Contains(e, "the migration failed") {
		t.Errorf("Event %q; want it to say why", e)
	}
	err = kwait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		got := &v1.StatefulMigration{}
		if err := api.Get(ctx, client.ObjectKeyFromObject(m), got); err != nil {
			return false, err
		}
		done := strings.Split(got.Annotations[AnnotationImagesDeleted], ",")
		return slices.Contains(done, recorded) && slices.Contains(done, late), nil
	})
	if err != nil {
		t.Fatalf("the migration does not record both deletions (%s): %v", AnnotationImagesDeleted, err)
	}
}

// The agent's report is on the migration, where whoever may edit it can
// write: an image it names outside the repository the agent pushes to
// for this migration is not believed.
func TestTheAgentsLateReportIsBelievedOnlyInTheMigrationsRepository(t *testing.T) {
	r := &FailedMigrations{Reconciler: &Reconciler{Opts: Options{DefaultRepository: "registry.example.com/checkpoints"}}}
	digest := "@sha256:" + strings.Repeat("a", 64)
	for _, tc := range []struct {
		repo, reported string
		believed       bool
	}{
		{"", "registry.example.com/checkpoints" + digest, true},
		{"", "registry.example.com/shop/orders" + digest, false},
		{"", "registry.example.com/checkpoints:v1", false},
		{"registry.example.com/team/checkpoints", "registry.example.com/team/checkpoints" + digest, true},
		{"registry.example.com/team/checkpoints", "registry.example.com/checkpoints" + digest, false},
	} {
		m := &v1.StatefulMigration{
			ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{v1.AnnotationAgentImage: `{"image":"` + tc.reported + `"}`}},
			Spec:       v1.StatefulMigrationSpec{CheckpointImageRepository: tc.repo},
		}
		if got := slices.Contains(r.imagesOf(m), tc.reported); got != tc.believed {
			t.Errorf("repository %q, reported %s: believed %v, want %v", tc.repo, tc.reported, got, tc.believed)
		}
	}
}
