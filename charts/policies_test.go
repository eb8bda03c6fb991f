package charts_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/internal/expect"
	"github.com/ms2m/ms2m/internal/testenv"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// A tenant who may edit StatefulMigrations in its namespace cannot forge
// what ms2m acts on: the agent's results (an archive path the root agent
// would read and push, an image the manager would start) and the status.
// The agent and the manager still can. Against a real API server with the
// chart's ValidatingAdmissionPolicy installed.
func TestOnlyMs2mWritesAgentResultsAndStatus(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ctx := context.Background()
	if _, err := runHelm(t, "install", release, chartDir(), "--namespace", namespace, "--create-namespace", "--skip-crds",
		"--kubeconfig", env.KubeconfigFile(t)); err != nil {
		t.Fatal(err)
	}
	const tenantNS = "shop"
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tenantNS}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: tenantNS, Name: "edit-migrations"}, Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{v1.GroupVersion.Group}, Resources: []string{"statefulmigrations", "statefulmigrations/status"}, Verbs: []string{"*"}}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: tenantNS, Name: "edit-migrations"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "edit-migrations"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: "system:serviceaccount:shop:app"}}},
	} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	as := func(user string) client.Client {
		cfg := rest.CopyConfig(env.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:serviceaccounts", "system:authenticated"}}
		c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tenant := as("system:serviceaccount:shop:app")
	agent := as("system:serviceaccount:" + namespace + ":" + release + "-agent")
	manager := as("system:serviceaccount:" + namespace + ":" + release + "-manager")
	forged := `{"archive":"/etc/kubernetes/admin.conf","node":"node-1"}`
	refused := func(what string, err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want refused naming %s", what, err, want)
		}
	}

	m := &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Namespace: tenantNS, Name: "move",
		Annotations: map[string]string{v1.AnnotationAgentCheckpoint: forged}}, Spec: v1.StatefulMigrationSpec{SourcePod: "orders-0"}}
	// The API server enforces a new policy once its informers have it:
	// probe with dry runs until it does.
	expect.Eventually(t, "the policy enforced", func() error {
		if err := tenant.Create(ctx, m.DeepCopy(), client.DryRunAll); err == nil {
			return errors.New("a forged archive is still admitted")
		}
		return nil
	})
	refused("a migration created with a forged archive", tenant.Create(ctx, m.DeepCopy()), "agent.migration.ms2m.io/")

	m.Annotations = map[string]string{"team": "payments"}
	if err := tenant.Create(ctx, m); err != nil {
		t.Fatalf("an ordinary migration: %v", err)
	}
	patch := client.MergeFrom(m.DeepCopy())
	m.Annotations[v1.AnnotationAgentImage] = `{"image":"evil.example.com/miner@sha256:` + strings.Repeat("0", 64) + `"}`
	refused("a forged image result", tenant.Patch(ctx, m, patch), "agent.migration.ms2m.io/")

	fresh := &v1.StatefulMigration{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(m), fresh); err != nil {
		t.Fatal(err)
	}
	patch = client.MergeFrom(fresh.DeepCopy())
	fresh.Annotations[v1.AnnotationAgentCheckpoint] = `{"archive":"/var/lib/kubelet/checkpoints/checkpoint-orders-0_shop-app-2026-12-06T19:30:00Z.tar","node":"node-1"}`
	if err := agent.Patch(ctx, fresh, patch); err != nil {
		t.Fatalf("the agent reporting its result: %v", err)
	}
	patch = client.MergeFrom(fresh.DeepCopy())
	fresh.Annotations[v1.AnnotationAgentCheckpoint] = forged
	refused("a tenant rewriting the agent's result", tenant.Patch(ctx, fresh, patch), "agent.migration.ms2m.io/")
	fresh.Annotations[v1.AnnotationAgentCheckpoint] = `{"archive":"/var/lib/kubelet/checkpoints/checkpoint-orders-0_shop-app-2026-12-06T19:30:00Z.tar","node":"node-1"}`
	patch = client.MergeFrom(fresh.DeepCopy())
	fresh.Annotations["team"] = "orders"
	if err := tenant.Patch(ctx, fresh, patch); err != nil {
		t.Fatalf("a tenant editing its own annotation, the agent's left alone: %v", err)
	}

	patch = client.MergeFrom(fresh.DeepCopy())
	fresh.Status.Phase = v1.PhaseCompleted
	refused("a tenant writing the status", tenant.Status().Patch(ctx, fresh, patch), "status")
	if err := manager.Status().Patch(ctx, fresh, patch); err != nil {
		t.Fatalf("the manager writing the status: %v", err)
	}
}
