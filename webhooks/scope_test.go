package webhooks

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/ms2m/ms2m/internal/testenv"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migratable"
)

// scopeCase is a pod created while the manager is down, and whether the
// API server must refuse it.
type scopeCase struct {
	name        string
	pod         *corev1.Pod
	wantRefused bool
}

// scopeCases are every kind of pod the pod mutation webhook acts on, and
// pods it must never hold up.
func scopeCases() []scopeCase {
	inNS := func(ns string, p *corev1.Pod) *corev1.Pod { p.Namespace = ns; return p }
	ordinary := func() *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "ordinary", Namespace: "apps"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}}}
	}
	withOtherAnnotations := ordinary()
	withOtherAnnotations.Annotations = map[string]string{"prometheus.io/scrape": "true", v1.AnnotationKafkaTopic: "orders"}

	// A migration's target: the controller builds it from its mutated
	// source, and the webhook re-injects the sidecar.
	source := migratablePod()
	source.Namespace, source.Spec.NodeName = "apps", "node-a"
	if errs := Mutate(source, DefaultSidecarOptions()); len(errs) > 0 {
		panic(errs)
	}
	m := &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: "move", Namespace: "apps", UID: types.UID("0123456789")},
		Spec: v1.StatefulMigrationSpec{SourcePod: source.Name}}
	target := migratable.TargetPodSkeleton(m, source)

	// The pod a StatefulSet recreates in place of a Sequential migration's
	// source: the webhook restores it; its template opted in.
	owned := func(p *corev1.Pod) *corev1.Pod {
		p.Name = "orders-0"
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "orders", UID: "u1", Controller: ptr.To(true)}}
		return p
	}

	return []scopeCase{
		{"ordinary pod", ordinary(), false},
		{"pod with other annotations", withOtherAnnotations, false},
		{"pod opted out (migratable: false)", inNS("apps", migratablePod(withAnnotation(v1.AnnotationMigratable, "false"))), false},
		{"ordinary StatefulSet pod", owned(ordinary()), false},
		{"kube-system pod", inNS(metav1.NamespaceSystem, ordinary()), false},
		{"migratable pod in kube-system (not served)", inNS(metav1.NamespaceSystem, migratablePod()), false},
		{"migratable pod", inNS("apps", migratablePod()), true},
		{"migratable pod with a typo (migratable: yes)", inNS("apps", migratablePod(withAnnotation(v1.AnnotationMigratable, "yes"))), true},
		{"migratable pod with an incomplete binding", inNS("apps", migratablePod(withoutAnnotation(v1.AnnotationKafkaTopic))), true},
		{"migration target pod", target, true},
		{"StatefulSet pod to restore", owned(inNS("apps", migratablePod())), true},
	}
}

// With the manager down, the API server refuses to create exactly the pods
// the webhook would act on, naming the webhook, and creates every other
// pod, kube-system's included, without waiting for the manager: the
// generated configuration's match condition and namespace selector, as the
// real API server evaluates them, agree with NeedsMutation.
func TestManagerDownRefusesOnlyPodsThatNeedIt(t *testing.T) {
	// Nothing listens on the port envtest points the configuration at.
	down := testenv.Start(t, testenv.Options{WebhookInstallOptions: envtest.WebhookInstallOptions{
		Paths: []string{filepath.Join(testenv.RepoRoot(), "config", "webhook")},
	}})
	ctx := context.Background()
	if err := down.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}}); err != nil {
		t.Fatal(err)
	}
	for i, tc := range scopeCases() {
		tc.pod.Name = fmt.Sprintf("%s-%d", tc.pod.Name, i) // one pod per case
		t.Run(tc.name, func(t *testing.T) {
			served := tc.pod.Namespace != metav1.NamespaceSystem
			if got := served && NeedsMutation(tc.pod); got != tc.wantRefused {
				t.Fatalf("NeedsMutation (served namespace %v) = %v; the table wants refused = %v", served, got, tc.wantRefused)
			}
			err := down.Client.Create(ctx, tc.pod.DeepCopy())
			switch {
			case tc.wantRefused && err == nil:
				stored := &corev1.Pod{}
				_ = down.Client.Get(ctx, client.ObjectKeyFromObject(tc.pod), stored)
				t.Fatalf("created while the manager is down, not prepared by it (containers %v, annotations %v)", containerNames(stored), stored.Annotations)
			case tc.wantRefused && !strings.Contains(err.Error(), PodMutationWebhook):
				t.Fatalf("refused with %v; want a message naming %s", err, PodMutationWebhook)
			case !tc.wantRefused && err != nil:
				t.Fatalf("refused while the manager is down, though ms2m has nothing to do with it: %v", err)
			}
			if tc.wantRefused {
				if err := down.Client.Get(ctx, client.ObjectKeyFromObject(tc.pod), &corev1.Pod{}); !apierrors.IsNotFound(err) {
					t.Errorf("refused pod exists anyway: %v", err)
				}
			}
		})
	}
}

// Through the scoped configuration the manager still prepares a migratable
// pod in any namespace but kube-system, whose pods it never sees.
func TestAPIServerSendsMigratablePodsOutsideKubeSystem(t *testing.T) {
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	if err := env.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	pod := migratablePod()
	pod.Name, pod.Namespace = "scoped", "shop"
	got := createAndGet(t, pod)
	if migratable.Sidecar(got) == nil || got.Annotations[v1.AnnotationCheckpointRestore] != "enabled" {
		t.Fatalf("migratable pod in namespace shop: containers %v, annotations %v; want the sidecar injected", containerNames(got), got.Annotations)
	}

	sys := migratablePod()
	sys.Name, sys.Namespace = "scoped", metav1.NamespaceSystem
	got = createAndGet(t, sys)
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), got, client.GracePeriodSeconds(0)) })
	if migratable.Sidecar(got) != nil {
		t.Fatalf("a kube-system pod was sent to the manager: containers %v", containerNames(got))
	}
}

// A drain of kube-system never waits on ms2m: the eviction webhook is not
// called there, even for a pod that looks migratable.
func TestEvictionInKubeSystemIsNotSentToTheManager(t *testing.T) {
	ctx := context.Background()
	pod := migratablePod(withAnnotation(v1.AnnotationCheckpointRestore, "enabled"))
	pod.Name, pod.Namespace, pod.Spec.NodeName = "evict-system", metav1.NamespaceSystem, "node-a"
	got := createAndGet(t, pod)
	got.Status.Phase = corev1.PodRunning
	if err := env.Client.Status().Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), got, client.GracePeriodSeconds(0)) })
	if err := evict(got, false); err != nil {
		t.Fatalf("eviction in kube-system: %v; want it let through without ms2m", err)
	}
	if ms := migrationsOf(t, got); len(ms) != 0 {
		t.Fatalf("an eviction in kube-system started %d migrations", len(ms))
	}
}

func containerNames(p *corev1.Pod) []string {
	var out []string
	for _, c := range p.Spec.Containers {
		out = append(out, c.Name)
	}
	return out
}

// docs/webhooks.md shows readers the pod webhook's scope as YAML; it must
// be the scope the manifests carry, not a copy that drifted.
func TestTheDocumentedScopeIsTheWebhooks(t *testing.T) {
	page, err := os.ReadFile(filepath.Join("..", "docs", "webhooks.md"))
	if err != nil {
		t.Fatal(err)
	}
	var block string
	for _, b := range strings.Split(string(page), "```yaml\n")[1:] {
		if b, _, _ = strings.Cut(b, "```"); strings.Contains(b, "matchConditions:") {
			block = b
		}
	}
	if block == "" {
		t.Fatal("docs/webhooks.md shows no YAML block with matchConditions")
	}
	var documented struct {
		MatchConditions   []admissionregistrationv1.MatchCondition `json:"matchConditions"`
		NamespaceSelector *metav1.LabelSelector                    `json:"namespaceSelector"`
	}
	if err := yaml.UnmarshalStrict([]byte(block), &documented); err != nil {
		t.Fatalf("docs/webhooks.md's scope: %v", err)
	}
	want := Scopes()[PodMutationWebhook]
	if !equality.Semantic.DeepEqual(documented.MatchConditions, want.MatchConditions) || !equality.Semantic.DeepEqual(documented.NamespaceSelector, want.NamespaceSelector) {
		t.Fatalf("docs/webhooks.md shows\n%+v\n%+v\nbut the pod webhook's scope is\n%+v\n%+v", documented.MatchConditions, documented.NamespaceSelector, want.MatchConditions, want.NamespaceSelector)
	}
}
