package webhooks

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/ms2m/ms2m/internal/testenv"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// The webhook configuration generated into config/webhook is installed into
// a real kube-apiserver, which calls a real webhook server over TLS.

var env *testenv.Env

// evictor is the eviction handler the API server calls; tests may switch
// its fallback.
var evictor *PodEvictor

func TestMain(m *testing.M) {
	opts := testenv.Options{WebhookInstallOptions: envtest.WebhookInstallOptions{
		Paths: []string{filepath.Join(testenv.RepoRoot(), "config", "webhook")},
	}}
	os.Exit(testenv.RunMain(m, &env, opts, startWebhookServer))
}

func startWebhookServer(e *testenv.Env) (stop func(), err error) {
	wio := e.Webhook()
	srv := webhook.NewServer(webhook.Options{Host: wio.LocalServingHost, Port: wio.LocalServingPort, CertDir: wio.LocalServingCertDir})
	srv.Register(PodMutationPath, &webhook.Admission{Handler: NewPodMutator(admission.NewDecoder(scheme.Scheme), DefaultSidecarOptions())})
	evictor = &PodEvictor{Reader: e.Client, Writer: e.Client, Fallback: FallbackDeny}
	srv.Register(PodEvictionPath, &webhook.Admission{Handler: evictor})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = srv.Start(ctx) }()
	// Tests must not start before the server answers: the API server
	// would refuse migratable pods (pods.ms2m.io fails closed) and let
	// evictions through (evictions.ms2m.io fails open).
	addr := net.JoinHostPort(wio.LocalServingHost, strconv.Itoa(wio.LocalServingPort))
	err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // readiness probe of a local test server
		if err != nil {
			return false, nil
		}
		_ = conn.Close()
		return true, nil
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("webhook server did not start on %s: %w", addr, err)
	}
	return cancel, nil
}

func createAndGet(t *testing.T, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatalf("creating pod: %v", err)
	}
	got := &corev1.Pod{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), got); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestAPIServerInjectsSidecarIntoMigratablePods(t *testing.T) {
	got := createAndGet(t, migratablePod())
	names := []string{}
	for _, c := range got.Spec.Containers {
		names = append(names, c.Name)
	}
	if strings.Join(names, ",") != "app,"+v1.SidecarContainerName {
		t.Fatalf("stored pod containers = %v; want app and the sidecar", names)
	}
	if got.Annotations[v1.AnnotationCheckpointRestore] != "enabled" {
		t.Errorf("stored pod lacks %s: %v", v1.AnnotationCheckpointRestore, got.Annotations)
	}
	if envOf(got.Spec.Containers[1], "MS2M_KAFKA_TOPIC") != "orders" {
		t.Errorf("sidecar env not taken from the annotations: %v", got.Spec.Containers[1].Env)
	}
	// The API server accepts the extended-resource marker as stored.
	expectSchedulerMarker(t, got.Spec.Containers[1])
}

func TestAPIServerLeavesOrdinaryPodsAlone(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "ordinary", Namespace: "default"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}},
	}
	got := createAndGet(t, pod)
	if len(got.Spec.Containers) != 1 || len(got.Annotations) != 0 {
		t.Fatalf("an ordinary pod was mutated: containers %d, annotations %v", len(got.Spec.Containers), got.Annotations)
	}
}

func TestAPIServerRefusesMigratablePodWithBadBinding(t *testing.T) {
	pod := migratablePod(withAnnotation(v1.AnnotationAppPort, "http"), withoutAnnotation(v1.AnnotationKafkaTopic))
	pod.Name = "bad-binding"
	err := env.Client.Create(context.Background(), pod)
	if err == nil {
		t.Fatal("pod with an invalid binding was admitted")
	}
	if !apierrors.IsForbidden(err) {
		t.Errorf("error is %v; want Forbidden (denied by the webhook)", err)
	}
	for _, a := range []string{v1.AnnotationAppPort, v1.AnnotationKafkaTopic} {
		if !strings.Contains(err.Error(), a) {
			t.Errorf("kubectl user would not learn which annotation is wrong (%s): %v", a, err)
		}
	}
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(pod), &corev1.Pod{}); !apierrors.IsNotFound(err) {
		t.Errorf("refused pod exists anyway: %v", err)
	}
}

func TestReadmissionOfAnUpdatedPodKeepsOneSidecar(t *testing.T) {
	ctx := context.Background()
	pod := migratablePod()
	pod.Name = "updated"
	got := createAndGet(t, pod)
	// Updates are not sent to the webhook; labels change, sidecar stays one.
	got.Labels = map[string]string{"tier": "stream"}
	if err := env.Client.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	// A pod recreated from a stored, already-mutated spec is admitted as is.
	clone := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "recreated", Namespace: "default", Annotations: got.Annotations}, Spec: got.Spec}
	again := createAndGet(t, clone)
	n := 0
	for _, c := range again.Spec.Containers {
		if c.Name == v1.SidecarContainerName {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("re-admitted pod has %d sidecars; want 1", n)
	}
}
