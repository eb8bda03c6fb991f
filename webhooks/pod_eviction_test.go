package webhooks

import (
	"context"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/evacuation"
)

// runningPod creates a pod (through the mutating webhook) bound to node
// and marks it Running, as its kubelet would.
func runningPod(t *testing.T, name, node string, migratable bool) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	pod := migratablePod()
	if !migratable {
		pod.Annotations = nil
	}
	pod.Name, pod.Spec.NodeName = name, node
	got := createAndGet(t, pod)
	got.Status.Phase = corev1.PodRunning
	if err := env.Client.Status().Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.Client.Delete(context.Background(), got, client.GracePeriodSeconds(0))
	})
	return got
}

func evict(pod *corev1.Pod, dryRun bool) error {
	cs := kubernetes.NewForConfigOrDie(env.Config)
	ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace}}
	if dryRun {
		ev.DeleteOptions = &metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}}
	}
	return cs.CoreV1().Pods(pod.Namespace).EvictV1(context.Background(), ev)
}

func migrationsOf(t *testing.T, pod *corev1.Pod) []v1.StatefulMigration {
	t.Helper()
	var list v1.StatefulMigrationList
	if err := env.Client.List(context.Background(), &list, client.InNamespace(pod.Namespace)); err != nil {
		t.Fatal(err)
	}
	var out []v1.StatefulMigration
	for _, m := range list.Items {
		if m.Spec.SourcePod == pod.Name {
			out = append(out, m)
		}
	}
	return out
}

// Evictions of a migratable pod are refused with 429 (kubectl drain
// retries), and however many arrive at once, one migration is started.
func TestEvictionsOfAMigratablePodStartOneMigration(t *testing.T) {
	pod := runningPod(t, "evict-many", "node-a", true)
	const n = 10
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = evict(pod, false) })
	}
	wg.Wait()
	want := evacuation.MigrationName(pod)
	for i, err := range errs {
		if !apierrors.IsTooManyRequests(err) {
			t.Fatalf("eviction %d: %v; want 429 Too Many Requests", i, err)
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("eviction %d does not name the migration %s: %v", i, want, err)
		}
	}
	ms := migrationsOf(t, pod)
	if len(ms) != 1 {
		t.Fatalf("%d migrations for %d concurrent evictions; want exactly 1", len(ms), n)
	}
	m := ms[0]
	if m.Name != want || m.Labels[v1.LabelTrigger] != evacuation.Trigger || m.Labels[evacuation.LabelSourceNode] != "node-a" || m.Spec.TargetNode != "" {
		t.Errorf("migration %s labels %v target %q; want %s, trigger evacuation, source node node-a, no fixed target", m.Name, m.Labels, m.Spec.TargetNode, want)
	}
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(pod), &corev1.Pod{}); err != nil {
		t.Fatalf("the pod is gone after refused evictions: %v", err)
	}
}

func TestDryRunEvictionStartsNothing(t *testing.T) {
	pod := runningPod(t, "evict-dry", "node-a", true)
	err := evict(pod, true)
	if !apierrors.IsTooManyRequests(err) || !strings.Contains(err.Error(), "dry run") {
		t.Fatalf("dry-run eviction: %v; want 429 saying it is a dry run", err)
	}
	if ms := migrationsOf(t, pod); len(ms) != 0 {
		t.Fatalf("a dry-run eviction started %d migrations", len(ms))
	}
}

func TestOrdinaryPodIsEvicted(t *testing.T) {
	pod := runningPod(t, "evict-ordinary", "node-a", false)
	if err := evict(pod, false); err != nil {
		t.Fatalf("eviction of an ordinary pod: %v", err)
	}
	got := &corev1.Pod{}
	err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(pod), got)
	if err == nil && got.DeletionTimestamp == nil {
		t.Fatal("the evicted pod is not being deleted")
	}
	if ms := migrationsOf(t, pod); len(ms) != 0 {
		t.Fatalf("an ordinary pod's eviction started %d migrations", len(ms))
	}
}

// A pod some migration is already moving: 429 naming that migration, and
// no second one.
func TestEvictionDuringAUserMigrationNamesIt(t *testing.T) {
	pod := runningPod(t, "evict-busy", "node-a", true)
	m := &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: "by-hand", Namespace: pod.Namespace}, Spec: v1.StatefulMigrationSpec{SourcePod: pod.Name}}
	if err := env.Client.Create(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), m) })
	err := evict(pod, false)
	if !apierrors.IsTooManyRequests(err) || !strings.Contains(err.Error(), "by-hand") {
		t.Fatalf("eviction: %v; want 429 naming migration by-hand", err)
	}
	if ms := migrationsOf(t, pod); len(ms) != 1 {
		t.Fatalf("%d migrations; want only the user's", len(ms))
	}
}

// After the pod's evacuation failed: deny (default) keeps it and says why;
// allow lets the eviction through.
func TestFailedEvacuationFallsBack(t *testing.T) {
	pod := runningPod(t, "evict-failed", "node-a", true)
	m := evacuation.NewMigration(pod)
	ctx := context.Background()
	if err := env.Client.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), m) })
	m.Status.Phase, m.Status.FailureReason = v1.PhaseFailed, "NoEligibleTargetNode: no node can take the pod"
	if err := env.Client.Status().Update(ctx, m); err != nil {
		t.Fatal(err)
	}
	err := evict(pod, false)
	if !apierrors.IsTooManyRequests(err) || !strings.Contains(err.Error(), "NoEligibleTargetNode") || !strings.Contains(err.Error(), "delete StatefulMigration "+m.Name) {
		t.Fatalf("eviction after a failed migration: %v; want 429 with the reason and how to retry", err)
	}
	if ms := migrationsOf(t, pod); len(ms) != 1 {
		t.Fatalf("%d migrations; a failed evacuation must not be retried by itself", len(ms))
	}
	evictor.Fallback = FallbackAllow
	t.Cleanup(func() { evictor.Fallback = FallbackDeny })
	if err := evict(pod, false); err != nil {
		t.Fatalf("eviction with --eviction-fallback=allow: %v", err)
	}
}
