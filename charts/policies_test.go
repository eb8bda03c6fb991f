package charts_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/internal/expect"
	"github.com/ms2m/ms2m/internal/testenv"
	"github.com/ms2m/ms2m/pkg/agent"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// A tenant who may edit StatefulMigrations in its namespace cannot forge
// what ms2m acts on: the agent's results (an archive path the root agent
// would read and push, an image the manager would start) and the status.
// The agent and the manager still can. Against a real API server with the
// chart's ValidatingAdmissionPolicy installed.
func TestOnlyMs2mWritesAgentResultsAndStatus(t *testing.T) {
	env := withChart(t)
	ctx := context.Background()
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
	as := func(user string) client.Client { return impersonating(t, env, user, "system:serviceaccounts") }
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

// A compromised agent (root, with host mounts) holds its pod's token: the
// agent's service account, bound to a pod on node-a. With it it keeps
// labelling node-a as the Labeler does, and can do nothing else to nodes:
// not another node, not node-a's other labels, taints, cordon or
// annotations; a token of the same account bound to no pod changes no node.
// Everyone else is left alone. Against a real API server with the chart's
// ValidatingAdmissionPolicy installed.
func TestAgentChangesOnlyItsOwnNodesMs2mLabels(t *testing.T) {
	env := withChart(t)
	ctx := context.Background()
	agentSA := release + "-agent"
	for _, name := range []string{"node-a", "node-b"} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"topology.kubernetes.io/zone": "z1"}}}
		if err := env.Client.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
		n.Status.NodeInfo.ContainerRuntimeVersion = "ms2m-sim://0.1.0 (simulating cri-o 1.37.0)"
		if err := env.Client.Status().Update(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "agent-a"}, Spec: corev1.PodSpec{
		NodeName: "node-a", ServiceAccountName: agentSA, Containers: []corev1.Container{{Name: "agent", Image: "ms2m"}}}}
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	withToken := func(bound *authenticationv1.BoundObjectReference) client.Client {
		tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, agentSA,
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{BoundObjectRef: bound}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cfg := rest.AnonymousClientConfig(env.Config)
		cfg.BearerToken = tr.Status.Token
		c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// As the kubelet mounts it into the agent's pod.
	agentA := withToken(&authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID})
	unbound := withToken(nil)

	change := func(c client.Client, node string, mutate func(*corev1.Node), opts ...client.PatchOption) error {
		n := &corev1.Node{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: node}, n); err != nil {
			t.Fatal(err)
		}
		patch := client.MergeFrom(n.DeepCopy())
		mutate(n)
		return c.Patch(ctx, n, patch, opts...)
	}
	label := func(k, v string) func(*corev1.Node) { return func(n *corev1.Node) { n.Labels[k] = v } }

	// The API server enforces a new policy once its informers have it:
	// probe with dry runs until it does.
	expect.Eventually(t, "the policy enforced", func() error {
		err := change(agentA, "node-b", label("ms2m.io/checkpoint-restore", "true"), client.DryRunAll)
		switch {
		case err == nil:
			return errors.New("the agent of node-a still labels node-b")
		case !strings.Contains(err.Error(), "may not change node node-b"):
			return err
		}
		return nil
	})

	t.Run("the agent labels its own node", func(t *testing.T) {
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		l := &agent.Labeler{Client: agentA, NodeName: "node-a", Interval: time.Hour}
		go func() { done <- l.Start(runCtx) }()
		expect.Eventually(t, "node-a labelled by its agent", func() error {
			n := &corev1.Node{}
			if err := env.Client.Get(ctx, client.ObjectKey{Name: "node-a"}, n); err != nil {
				return err
			}
			if n.Labels[v1.LabelCheckpointRestore] != "true" || n.Labels[v1.LabelRuntime] != "cri-o" {
				return fmt.Errorf("labels %v", n.Labels)
			}
			return nil
		})
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
		if err := change(agentA, "node-a", func(n *corev1.Node) { delete(n.Labels, v1.LabelRuntime) }); err != nil {
			t.Errorf("the agent removing its node's %s label: %v", v1.LabelRuntime, err)
		}
	})

	for _, tc := range []struct {
		name   string
		c      client.Client
		node   string
		mutate func(*corev1.Node)
		want   []string
	}{
		{"labelling another node", agentA, "node-b", label("ms2m.io/checkpoint-restore", "true"),
			[]string{"ms2m agent of node node-a may not change node node-b"}},
		{"another label of its node", agentA, "node-a", label("node-role.kubernetes.io/control-plane", ""),
			[]string{"only ms2m.io/* labels of node node-a", "node-role.kubernetes.io/control-plane"}},
		{"removing another label of its node", agentA, "node-a", func(n *corev1.Node) { delete(n.Labels, "topology.kubernetes.io/zone") },
			[]string{"only ms2m.io/* labels of node node-a", "topology.kubernetes.io/zone"}},
		{"tainting its node", agentA, "node-a", func(n *corev1.Node) {
			n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "ms2m.io/drain", Effect: corev1.TaintEffectNoSchedule})
		}, []string{"only ms2m.io/* labels of node node-a", "not its spec"}},
		{"cordoning its node", agentA, "node-a", func(n *corev1.Node) { n.Spec.Unschedulable = true },
			[]string{"only ms2m.io/* labels of node node-a", "not its spec"}},
		{"annotating its node", agentA, "node-a", func(n *corev1.Node) { n.Annotations = map[string]string{"ms2m.io/x": "y"} },
			[]string{"only ms2m.io/* labels of node node-a", "not its annotations"}},
		{"a token bound to no pod", unbound, "node-a", label("ms2m.io/checkpoint-restore", "true"),
			[]string{"ms2m agent may change node node-a only with a token bound to its pod", "authentication.kubernetes.io/node-name"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := change(tc.c, tc.node, tc.mutate)
			if err == nil {
				t.Fatal("admitted")
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("refused with %q; want it to say %q", err, want)
				}
			}
		})
	}

	t.Run("others are left alone", func(t *testing.T) {
		if err := change(env.Client, "node-b", func(n *corev1.Node) {
			n.Labels["team"] = "payments"
			n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "ms2m.io/drain", Effect: corev1.TaintEffectNoSchedule})
		}); err != nil {
			t.Errorf("an administrator labelling and tainting a node: %v", err)
		}
	})
}

// The manager may create and patch pods in every namespace (RBAC cannot
// say "migration targets only"). With its token it creates a migration's
// target and adopts it, as the controller does, and nothing more: no pod
// that is not a migration target, none beyond Pod Security baseline
// (privileged, host namespaces, host paths and ports, extra capabilities),
// and no change to a pod's spec. Others are left alone. Against a real
// API server with the chart's ValidatingAdmissionPolicy installed.
func TestManagerCreatesOnlyMigrationTargetsWithoutHostAccess(t *testing.T) {
	env := withChart(t)
	ctx := context.Background()
	const tenantNS = "shop"
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tenantNS}}); err != nil {
		t.Fatal(err)
	}
	manager := impersonating(t, env, "system:serviceaccount:"+namespace+":"+release+"-manager", "system:serviceaccounts")
	admin := impersonating(t, env, "alice", "system:masters")
	target := func(name string, mutate func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: tenantNS, Name: name,
				Labels:      map[string]string{v1.LabelMigration: "move-orders-0"},
				Annotations: map[string]string{v1.AnnotationMigrationName: "move-orders-0"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{
				{Name: "app", Image: "registry.example/ckpt/orders@sha256:" + strings.Repeat("a", 64)},
				{Name: v1.SidecarContainerName, Image: "ms2m-replay"},
			}},
		}
		if mutate != nil {
			mutate(p)
		}
		return p
	}
	refused := func(t *testing.T, what string, err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want refused saying %q", what, err, want)
		}
	}
	privileged := func(p *corev1.Pod) {
		p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
	}
	// The API server enforces a new policy once its informers have it.
	expect.Eventually(t, "the policy enforced", func() error {
		if err := manager.Create(ctx, target("probe", privileged), client.DryRunAll); err == nil {
			return errors.New("the manager still creates a privileged pod")
		}
		return nil
	})

	t.Run("a migration target", func(t *testing.T) {
		p := target("orders-0-ms2m", nil)
		if err := manager.Create(ctx, p); err != nil {
			t.Fatalf("the manager creating a target: %v", err)
		}
		patch := client.MergeFrom(p.DeepCopy())
		p.Labels["app"] = "orders"
		p.Annotations[v1.AnnotationSidecarMode] = string(v1.SidecarModeLive)
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "orders-5d4", UID: "5d4"}}
		if err := manager.Patch(ctx, p, patch); err != nil {
			t.Fatalf("the manager adopting its target (labels, annotations, owner): %v", err)
		}
		patch = client.MergeFrom(p.DeepCopy())
		p.Spec.Containers[0].Image = "evil.example/miner:latest"
		refused(t, "the manager changing a container's image", manager.Patch(ctx, p, patch), "never its spec")
	})

	for name, c := range map[string]struct {
		mutate func(*corev1.Pod)
		want   string
	}{
		"not a migration target": {func(p *corev1.Pod) { delete(p.Labels, v1.LabelMigration) }, "only migration target pods"},
		"privileged":             {privileged, "app: privileged"},
		"host network":           {func(p *corev1.Pod) { p.Spec.HostNetwork = true }, "hostNetwork"},
		"host PID":               {func(p *corev1.Pod) { p.Spec.HostPID = true }, "hostPID"},
		"host path": {func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
		}, "hostPath volume root"},
		"host port": {func(p *corev1.Pod) {
			p.Spec.Containers[1].Ports = []corev1.ContainerPort{{ContainerPort: 10250, HostPort: 10250}}
		}, "ms2m-replay: hostPort 10250"},
		"SYS_ADMIN in an init container": {func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "setup", Image: "busybox",
				SecurityContext: &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_BIND_SERVICE", "SYS_ADMIN"}}}}}
		}, "setup: capability SYS_ADMIN"},
	} {
		t.Run(name, func(t *testing.T) {
			refused(t, "the manager creating a pod "+name, manager.Create(ctx, target("x", c.mutate), client.DryRunAll), c.want)
		})
	}

	t.Run("others are left alone", func(t *testing.T) {
		if err := admin.Create(ctx, target("ops-debug", privileged), client.DryRunAll); err != nil {
			t.Fatalf("a cluster admin creating a privileged pod: %v", err)
		}
	})
}

// withChart is a real API server with the chart installed (its CRDs
// skipped: the test environment has them).
func withChart(t *testing.T) *testenv.Env {
	t.Helper()
	env := testenv.Start(t, testenv.Options{})
	if _, err := runHelm(t, "install", release, chartDir(), "--namespace", namespace, "--create-namespace", "--skip-crds",
		"--kubeconfig", env.KubeconfigFile(t)); err != nil {
		t.Fatal(err)
	}
	return env
}

// impersonating is a client of env acting as user, in groups and
// system:authenticated.
func impersonating(t *testing.T, env *testenv.Env, user string, groups ...string) client.Client {
	t.Helper()
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: append(groups, "system:authenticated")}
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
