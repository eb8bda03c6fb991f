package manager

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/ms2m/ms2m/internal/testenv"
	"github.com/ms2m/ms2m/pkg/clientconfig"
	"github.com/ms2m/ms2m/pkg/replay"
)

// TestAFakeSidecarReceivesNothingOfUse is the attack of a tenant who runs
// their own "sidecar" and gets the manager to call it (a StatefulMigration
// of their pod, or a drain): the manager, under exactly the RBAC the code
// generates, presents a token that the API server refuses and that another
// pod's sidecar refuses, so the tenant can neither call the API server as
// the manager nor pause, fence or hand over anyone else's consumer. (Until
// this change the manager presented its own service-account token, a full
// API credential.)
func TestAFakeSidecarReceivesNothingOfUse(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ctx := context.Background()
	admin := kubernetes.NewForConfigOrDie(env.Config)
	const ns, name = "ms2m-system", "ms2m-manager"
	managerConfig := managerUnderGeneratedRole(t, admin, env.Config)
	tokens, err := clientconfig.NewAudienceTokens(managerConfig)
	if err != nil {
		t.Fatal(err)
	}
	sidecars := &replay.Client{Token: tokens.Token}

	// The tenant's fake sidecar keeps what it is given.
	var mu sync.Mutex
	var received []string
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		received = append(received, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		mu.Unlock()
		_, _ = io.WriteString(w, `{"mode":"live"}`)
	}))
	t.Cleanup(fake.Close)
	tenantPod := replay.Endpoint{Addr: strings.TrimPrefix(fake.URL, "http://"), Audience: replay.ControlAudience("tenant", "uid-of-the-fake")}
	for range 2 {
		if _, err := sidecars.Pause(ctx, tenantPod); err != nil {
			t.Fatalf("the manager's call to the tenant's sidecar: %v", err)
		}
	}
	mu.Lock()
	stolen := received[0]
	reused := received[1] == stolen
	mu.Unlock()
	if stolen == "" {
		t.Fatal("the manager presented no token")
	}
	if !reused {
		t.Error("the manager asked for a new token on the second call to the same pod (a TokenRequest on the downtime's path)")
	}

	// 1. The API server refuses it.
	asTenant := kubernetes.NewForConfigOrDie(&rest.Config{Host: env.Config.Host, TLSClientConfig: rest.TLSClientConfig{CAData: env.Config.CAData}, BearerToken: stolen})
	if _, err := asTenant.CoreV1().Pods("tenant").List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Errorf("the stolen token listing pods: %v; want 401 Unauthorized", err)
	}
	// 2. Another pod's sidecar refuses it (the check its control API makes
	// before anything else), while accepting the manager's token for it.
	keys, err := replay.NewIssuerKeys(serviceAccountConfig(t, admin, env.Config, "shop", "orders"))
	if err != nil {
		t.Fatal(err)
	}
	victim := replay.ControlAudience("shop", "uid-of-a-real-consumer")
	verifier := &replay.TokenVerifier{Audience: victim, Keys: keys}
	if user, err := verifier.Authenticate(ctx, stolen); err == nil {
		t.Errorf("another pod's sidecar accepted the stolen token as %s", user)
	}
	own, err := tokens.Token(ctx, victim)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := verifier.Authenticate(ctx, own); err != nil || id.User != "system:serviceaccount:"+ns+":"+name {
		t.Errorf("the sidecar refused the manager's token for it: %q, %v", id.User, err)
	}
	// 3. The manager may mint tokens of its own service account only.
	if _, err := kubernetes.NewForConfigOrDie(managerConfig).CoreV1().ServiceAccounts("shop").CreateToken(ctx, "orders", &authenticationv1.TokenRequest{}, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the manager minting a token of shop/orders: %v; want 403 Forbidden", err)
	}
}

// managerUnderGeneratedRole creates the service account
// ms2m-system/ms2m-manager bound to the generated Role (config/rbac) as the
// chart binds it, and returns a client configuration presenting its token.
func managerUnderGeneratedRole(t *testing.T, admin kubernetes.Interface, cfg *rest.Config) *rest.Config {
	t.Helper()
	ctx := context.Background()
	const ns, name = "ms2m-system", "ms2m-manager"
	managerConfig := serviceAccountConfig(t, admin, cfg, ns, name)
	role := generatedRole(t)
	if _, err := admin.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return managerConfig
}

// serviceAccountConfig creates namespace/name and returns a client
// configuration presenting its token.
func serviceAccountConfig(t *testing.T, admin kubernetes.Interface, cfg *rest.Config, namespace, name string) *rest.Config {
	t.Helper()
	ctx := context.Background()
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := admin.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &rest.Config{Host: cfg.Host, TLSClientConfig: rest.TLSClientConfig{CAData: cfg.CAData}, BearerToken: tr.Status.Token}
}

// generatedRole is the namespaced Role in config/rbac/manager/role.yaml.
func generatedRole(t *testing.T) *rbacv1.Role {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "manager", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(b), "\n---\n") {
		role := &rbacv1.Role{}
		if err := yaml.Unmarshal([]byte(doc), role); err != nil {
			t.Fatal(err)
		}
		if role.Kind == "Role" {
			return role
		}
	}
	t.Fatal("config/rbac/manager/role.yaml has no Role")
	return nil
}
