package charts_test

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/scheme"
	configv1 "k8s.io/kube-scheduler/config/v1"
	"sigs.k8s.io/yaml"

	"github.com/ms2m/ms2m/pkg/agent"
	"github.com/ms2m/ms2m/scheduler"
	"github.com/ms2m/ms2m/webhooks"
)

// Kinds the chart may render that client-go's scheme does not know.
var crdKinds = map[string]bool{
	"cert-manager.io/v1, Kind=Certificate":          true,
	"cert-manager.io/v1, Kind=Issuer":               true,
	"monitoring.coreos.com/v1, Kind=ServiceMonitor": true,
	"monitoring.coreos.com/v1, Kind=PodMonitor":     true,
	"monitoring.coreos.com/v1, Kind=PrometheusRule": true,
}

// as decodes u into a typed object, refusing unknown fields: a misspelt
// field in a template fails here instead of being dropped by the API server.
func as[T runtime.Object](t *testing.T, u *unstructured.Unstructured, obj T) T {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, obj, true); err != nil {
		t.Fatalf("%s %s does not decode strictly: %v", u.GetKind(), u.GetName(), err)
	}
	return obj
}

func everythingOn() []string {
	return []string{"-f", filepath.Join(repoRoot(), "charts", "testdata", "everything-on.yaml")}
}

func TestEveryRenderedObjectIsValid(t *testing.T) {
	for name, values := range map[string][]string{
		"defaults":      nil,
		"everything on": everythingOn(),
	} {
		t.Run(name, func(t *testing.T) {
			for _, u := range render(t, values...) {
				gvk := u.GroupVersionKind()
				if crdKinds[gvk.String()] {
					continue
				}
				obj, err := scheme.Scheme.New(gvk)
				if err != nil {
					t.Errorf("%s %s: unknown kind: %v", gvk, u.GetName(), err)
					continue
				}
				as(t, u, obj)
				if u.GetLabels()["app.kubernetes.io/part-of"] != "ms2m" {
					t.Errorf("%s %s lacks the label app.kubernetes.io/part-of=ms2m", u.GetKind(), u.GetName())
				}
				if ns := u.GetNamespace(); ns != "" && ns != namespace && !(u.GetKind() == "RoleBinding" && ns == "kube-system") {
					t.Errorf("%s %s is in namespace %q, not the release's", u.GetKind(), u.GetName(), ns)
				}
			}
		})
	}
}

// The chart grants exactly what the code's RBAC markers ask for.
func TestClusterRolesEqualGeneratedRBAC(t *testing.T) {
	objs := render(t)
	for _, tc := range []struct{ component, saOf string }{
		{"manager", "Deployment"},
		{"agent", "DaemonSet"},
	} {
		t.Run(tc.component, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(repoRoot(), "config", "rbac", tc.component, "role.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			want := &rbacv1.ClusterRole{}
			if err := yaml.UnmarshalStrict(raw, want); err != nil {
				t.Fatal(err)
			}
			name := release + "-" + tc.component
			got := as(t, objs.get(t, "ClusterRole", name), &rbacv1.ClusterRole{})
			if !equality.Semantic.DeepEqual(got.Rules, want.Rules) {
				t.Errorf("ClusterRole %s differs from config/rbac/%s/role.yaml (run `make generate`):\ngot  %v\nwant %v", name, tc.component, got.Rules, want.Rules)
			}
			binding := as(t, objs.get(t, "ClusterRoleBinding", name), &rbacv1.ClusterRoleBinding{})
			if binding.RoleRef.Kind != "ClusterRole" || binding.RoleRef.Name != name {
				t.Errorf("ClusterRoleBinding %s binds %s %s", name, binding.RoleRef.Kind, binding.RoleRef.Name)
			}
			sa := podSpecOf(t, objs, tc.saOf, name).ServiceAccountName
			want1 := rbacv1.Subject{Kind: "ServiceAccount", Name: sa, Namespace: namespace}
			if len(binding.Subjects) != 1 || binding.Subjects[0] != want1 {
				t.Errorf("ClusterRoleBinding %s binds %v; the %s runs as %s", name, binding.Subjects, tc.saOf, sa)
			}
			objs.get(t, "ServiceAccount", sa)
		})
	}
}

func podSpecOf(t *testing.T, objs objects, kind, name string) *corev1.PodSpec {
	t.Helper()
	switch kind {
	case "Deployment":
		return &as(t, objs.get(t, kind, name), &appsv1.Deployment{}).Spec.Template.Spec
	case "DaemonSet":
		return &as(t, objs.get(t, kind, name), &appsv1.DaemonSet{}).Spec.Template.Spec
	}
	t.Fatalf("no pod spec in a %s", kind)
	return nil
}

// flags turns a container's "--name=value" args into a map.
func flags(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, a := range c.Args {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") {
			t.Fatalf("container %s: argument %q is not a --flag", c.Name, a)
		}
		if !ok {
			value = "true"
		}
		out[name] = value
	}
	return out
}

func portOf(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return int32(n)
}

// serviceTarget resolves Service name, port to the container port of the
// pods it selects in spec (their labels in podLabels).
func serviceTarget(t *testing.T, objs objects, name string, port int32, podLabels map[string]string, c corev1.Container) int32 {
	t.Helper()
	svc := as(t, objs.get(t, "Service", name), &corev1.Service{})
	if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(podLabels)) {
		t.Fatalf("Service %s selects %v, not the pods labelled %v", name, svc.Spec.Selector, podLabels)
	}
	for _, p := range svc.Spec.Ports {
		if p.Port != port {
			continue
		}
		if p.TargetPort.Type == intstr.Int {
			return p.TargetPort.IntVal
		}
		for _, cp := range c.Ports {
			if cp.Name == p.TargetPort.StrVal {
				return cp.ContainerPort
			}
		}
		t.Fatalf("Service %s targets port %q, which container %s does not name", name, p.TargetPort.StrVal, c.Name)
	}
	t.Fatalf("Service %s has no port %d", name, port)
	return 0
}

// Every webhook the API server calls reaches the manager's webhook server,
// on the path the code serves, over TLS the CA bundle verifies; apart from
// where it is served, each is exactly what the code's markers generated.
func TestWebhooksReachTheManager(t *testing.T) {
	objs := render(t)
	dep := as(t, objs.get(t, "Deployment", release+"-manager"), &appsv1.Deployment{})
	mgr := dep.Spec.Template.Spec.Containers[0]
	f := flags(t, mgr)

	raw, err := os.ReadFile(filepath.Join(repoRoot(), "config", "webhook", "manifests.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	generated := decodeAll(t, string(raw))
	served := map[string]string{"pods.ms2m.io": webhooks.PodMutationPath, "evictions.ms2m.io": webhooks.PodEvictionPath}
	var n int
	for _, want := range generated {
		got := objs.get(t, want.GetKind(), release+"-"+want.GetName())
		gotHooks, _, _ := unstructured.NestedSlice(got.Object, "webhooks")
		wantHooks, _, _ := unstructured.NestedSlice(want.Object, "webhooks")
		if len(gotHooks) != len(wantHooks) {
			t.Fatalf("%s %s: the chart registers %d webhooks, config/webhook %d", got.GetKind(), got.GetName(), len(gotHooks), len(wantHooks))
		}
		for i := range gotHooks {
			g, w := gotHooks[i].(map[string]any), wantHooks[i].(map[string]any)
			var cc admissionregistrationv1.WebhookClientConfig
			if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(g["clientConfig"].(map[string]any), &cc, true); err != nil {
				t.Fatal(err)
			}
			wantPath, _, _ := unstructured.NestedString(w, "clientConfig", "service", "path")
			delete(g, "clientConfig")
			delete(w, "clientConfig")
			if !equality.Semantic.DeepEqual(g, w) {
				t.Errorf("webhook %s differs from config/webhook (run `make generate`):\ngot  %v\nwant %v", g["name"], g, w)
			}
			name := g["name"].(string)
			n++
			if cc.Service == nil || cc.Service.Path == nil || *cc.Service.Path != wantPath {
				t.Fatalf("webhook %s: clientConfig %+v; want path %s", name, cc, wantPath)
			}
			if path, ok := served[name]; ok && *cc.Service.Path != path {
				t.Errorf("webhook %s calls %s; the manager serves it on %s", name, *cc.Service.Path, path)
			}
			if cc.Service.Namespace != namespace {
				t.Errorf("webhook %s calls a Service in %q", name, cc.Service.Namespace)
			}
			port := int32(443)
			if cc.Service.Port != nil {
				port = *cc.Service.Port
			}
			if target := serviceTarget(t, objs, cc.Service.Name, port, dep.Spec.Template.Labels, mgr); strconv.Itoa(int(target)) != f["webhook-port"] {
				t.Errorf("webhook Service %s:%d reaches container port %d; the manager serves --webhook-port=%s", cc.Service.Name, port, target, f["webhook-port"])
			}
			verifyServing(t, objs, dep, cc.CABundle, cc.Service.Name+"."+namespace+".svc", f["webhook-cert-dir"])
		}
	}
	if n < len(served) {
		t.Errorf("the chart registers %d webhooks; the manager serves %d", n, len(served))
	}
}

// verifyServing checks that the manager's serving certificate, mounted at
// certDir, is valid for host and signed by the CA in caBundle.
func verifyServing(t *testing.T, objs objects, dep *appsv1.Deployment, caBundle []byte, host, certDir string) {
	t.Helper()
	var secretName string
	for _, m := range dep.Spec.Template.Spec.Containers[0].VolumeMounts {
		if m.MountPath == certDir {
			for _, v := range dep.Spec.Template.Spec.Volumes {
				if v.Name == m.Name && v.Secret != nil {
					secretName = v.Secret.SecretName
				}
			}
		}
	}
	if secretName == "" {
		t.Fatalf("no Secret is mounted at the manager's certificate directory %s", certDir)
	}
	secret := as(t, objs.get(t, "Secret", secretName), &corev1.Secret{})
	leaf := parseCert(t, secret.Data["tls.crt"])
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caBundle) {
		t.Fatalf("the CA bundle holds no certificate")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("Secret %s's certificate does not verify for %s with the CA bundle: %v", secretName, host, err)
	}
	if string(secret.Data["ca.crt"]) != string(caBundle) {
		t.Errorf("Secret %s's ca.crt is not the CA bundle given to the API server", secretName)
	}
}

func parseCert(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatal("no PEM certificate")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The rendered KubeSchedulerConfiguration is the documented example, and its
// URL reaches the manager's extender over TLS the CA verifies.
func TestSchedulerExtenderConfiguration(t *testing.T) {
	objs := render(t)
	dep := as(t, objs.get(t, "Deployment", release+"-manager"), &appsv1.Deployment{})
	mgr := dep.Spec.Template.Spec.Containers[0]
	f := flags(t, mgr)

	cm := as(t, objs.get(t, "ConfigMap", release+"-kube-scheduler-config"), &corev1.ConfigMap{})
	var got, example configv1.KubeSchedulerConfiguration
	if err := yaml.UnmarshalStrict([]byte(cm.Data["kube-scheduler-config.yaml"]), &got); err != nil {
		t.Fatalf("the rendered configuration is not a KubeSchedulerConfiguration: %v", err)
	}
	raw, err := os.ReadFile(filepath.Join(chartDir(), "examples", "kube-scheduler-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, &example); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(got, example) {
		t.Errorf("rendered configuration differs from examples/kube-scheduler-config.yaml:\ngot  %+v\nwant %+v", got, example)
	}
	x := got.Extenders[0]
	if "/"+x.FilterVerb != scheduler.FilterPath || "/"+x.PrioritizeVerb != scheduler.PrioritizePath {
		t.Errorf("verbs %s/%s; the extender serves %s and %s", x.FilterVerb, x.PrioritizeVerb, scheduler.FilterPath, scheduler.PrioritizePath)
	}
	u, err := url.Parse(x.URLPrefix)
	if err != nil || u.Scheme != "https" {
		t.Fatalf("urlPrefix %q is not an https URL: %v", x.URLPrefix, err)
	}
	svc, ns, _ := strings.Cut(u.Hostname(), ".")
	if !strings.HasPrefix(ns, namespace+".") {
		t.Errorf("urlPrefix %s is not in namespace %s", x.URLPrefix, namespace)
	}
	if target := serviceTarget(t, objs, svc, portOf(t, u.Host), dep.Spec.Template.Labels, mgr); target != portOf(t, f["scheduler-extender-bind-address"]) {
		t.Errorf("%s reaches container port %d; the extender serves %s", x.URLPrefix, target, f["scheduler-extender-bind-address"])
	}
	if filepath.Dir(f["scheduler-extender-cert-file"]) != f["webhook-cert-dir"] || filepath.Dir(f["scheduler-extender-key-file"]) != f["webhook-cert-dir"] {
		t.Errorf("extender certificate %s is not the mounted serving certificate in %s", f["scheduler-extender-cert-file"], f["webhook-cert-dir"])
	}
	secret := as(t, objs.get(t, "Secret", release+"-serving-cert"), &corev1.Secret{})
	verifyServing(t, objs, dep, secret.Data["ca.crt"], u.Hostname(), f["webhook-cert-dir"])
}

func TestManagerDeployment(t *testing.T) {
	objs := render(t)
	dep := as(t, objs.get(t, "Deployment", release+"-manager"), &appsv1.Deployment{})
	spec := dep.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("manager pod has %d containers", len(spec.Containers))
	}
	mgr := spec.Containers[0]
	f := flags(t, mgr)

	t.Run("leader election with a standby", func(t *testing.T) {
		if f["leader-elect"] != "true" || f["leader-election-namespace"] != namespace {
			t.Errorf("--leader-elect=%s --leader-election-namespace=%s", f["leader-elect"], f["leader-election-namespace"])
		}
		if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 {
			t.Errorf("replicas %v: no standby", dep.Spec.Replicas)
		}
		pdb := objs.get(t, "PodDisruptionBudget", release+"-manager")
		sel, _, _ := unstructured.NestedStringMap(pdb.Object, "spec", "selector", "matchLabels")
		if !labels.SelectorFromSet(sel).Matches(labels.Set(dep.Spec.Template.Labels)) {
			t.Errorf("the PodDisruptionBudget selects %v, not the manager pods", sel)
		}
	})
	t.Run("probes hit the health endpoint", func(t *testing.T) {
		health := portOf(t, f["health-probe-bind-address"])
		for name, p := range map[string]*corev1.Probe{"liveness": mgr.LivenessProbe, "readiness": mgr.ReadinessProbe} {
			if p == nil || p.HTTPGet == nil {
				t.Errorf("no HTTP %s probe", name)
				continue
			}
			if got := containerPort(t, mgr, p.HTTPGet.Port); got != health {
				t.Errorf("%s probe on port %d; health is served on %d", name, got, health)
			}
		}
		if mgr.LivenessProbe.HTTPGet.Path != "/healthz" || mgr.ReadinessProbe.HTTPGet.Path != "/readyz" {
			t.Errorf("probe paths %s and %s", mgr.LivenessProbe.HTTPGet.Path, mgr.ReadinessProbe.HTTPGet.Path)
		}
	})
	t.Run("metrics Service", func(t *testing.T) {
		if got := serviceTarget(t, objs, release+"-manager-metrics", 8080, dep.Spec.Template.Labels, mgr); got != portOf(t, f["metrics-bind-address"]) {
			t.Errorf("metrics Service reaches port %d; metrics are on %s", got, f["metrics-bind-address"])
		}
	})
	t.Run("the sidecar comes from the same image", func(t *testing.T) {
		if f["sidecar-image"] != mgr.Image {
			t.Errorf("--sidecar-image=%s, manager image %s", f["sidecar-image"], mgr.Image)
		}
	})
	t.Run("non-root, read-only, no capabilities", func(t *testing.T) {
		psc := spec.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
			t.Errorf("pod securityContext %+v does not run as non-root", psc)
		}
		expectLockedDown(t, mgr)
	})
}

func containerPort(t *testing.T, c corev1.Container, p intstr.IntOrString) int32 {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	t.Fatalf("container %s names no port %q", c.Name, p.StrVal)
	return 0
}

func expectLockedDown(t *testing.T, c corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil {
		t.Fatalf("container %s has no securityContext", c.Name)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("container %s is privileged", c.Name)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("container %s allows privilege escalation", c.Name)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("container %s has a writable root filesystem", c.Name)
	}
	if sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 0 {
		t.Errorf("container %s capabilities %+v; want drop ALL, add none", c.Name, sc.Capabilities)
	}
}

func TestAgentDaemonSet(t *testing.T) {
	objs := render(t)
	spec := podSpecOf(t, objs, "DaemonSet", release+"-agent")
	ctr := spec.Containers[0]
	f := flags(t, ctr)
	expectLockedDown(t, ctr)
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Errorf("agent shares host namespaces: network %v, PID %v, IPC %v", spec.HostNetwork, spec.HostPID, spec.HostIPC)
	}
	if spec.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Errorf("nodeSelector %v", spec.NodeSelector)
	}
	var nodeName bool
	for _, e := range ctr.Env {
		nodeName = nodeName || e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
	}
	if !nodeName {
		t.Error("NODE_NAME is not the pod's spec.nodeName")
	}
	if f["kubelet-ca-file"] == "" && f["kubelet-insecure-tls"] != "true" {
		t.Error("the agent cannot verify its kubelet: neither --kubelet-ca-file nor --kubelet-insecure-tls")
	}
	// The kubelet reports archive paths on the node: the checkpoint
	// directory must be at the same path. Every other host path is
	// read-only, at its own path under --host-root.
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	var checkpoints bool
	var underHostRoot []string
	for _, m := range ctr.VolumeMounts {
		path, ok := hostPaths[m.Name]
		if !ok {
			continue
		}
		switch {
		case path == "/var/lib/kubelet/checkpoints":
			checkpoints = m.MountPath == path
		case !m.ReadOnly:
			t.Errorf("host path %s is mounted writable", path)
		case m.MountPath != f["host-root"]+path:
			t.Errorf("host path %s is mounted at %s, not at its own path under --host-root=%s", path, m.MountPath, f["host-root"])
		default:
			underHostRoot = append(underHostRoot, path)
		}
	}
	if !checkpoints {
		t.Error("the kubelet's checkpoint directory is not mounted at its own path")
	}
	// The agent finds what it probes (runtime configuration, criu, dpkg's
	// database) under --host-root, and the chart mounts nothing else of the
	// host there.
	for _, p := range agent.HostPaths() {
		if !slices.ContainsFunc(underHostRoot, func(m string) bool { return p == m || strings.HasPrefix(p, m+"/") }) {
			t.Errorf("the agent reads host path %s, which the chart does not mount under --host-root (mounted: %v)", p, underHostRoot)
		}
	}
	for _, m := range underHostRoot {
		if !slices.Contains(agent.HostPaths(), m) {
			t.Errorf("the chart mounts host path %s, which the agent does not read (agent.HostPaths: %v)", m, agent.HostPaths())
		}
	}
	if got := containerPort(t, ctr, ctr.ReadinessProbe.HTTPGet.Port); got != portOf(t, f["health-probe-bind-address"]) {
		t.Errorf("readiness probe on %d; health on %s", got, f["health-probe-bind-address"])
	}
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// TestFlagsAreAcceptedByTheBinaries parses every rendered container's
// arguments with the real binary: `BINARY ARGS... --help` exits 0 only when
// each flag exists and its value parses.
func TestFlagsAreAcceptedByTheBinaries(t *testing.T) {
	buildOnce.Do(func() {
		binDir = t.TempDir()
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/ms2m-manager", "./cmd/ms2m-agent")
		cmd.Dir = repoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = err
			t.Logf("%s", out)
		}
	})
	if buildErr != nil {
		t.Fatalf("building the binaries: %v", buildErr)
	}
	for name, values := range map[string][]string{"defaults": nil, "everything on": everythingOn()} {
		objs := render(t, values...)
		for _, c := range append(podSpecOf(t, objs, "Deployment", release+"-manager").Containers, podSpecOf(t, objs, "DaemonSet", release+"-agent").Containers...) {
			t.Run(name+"/"+c.Name, func(t *testing.T) {
				if len(c.Command) != 1 || !strings.HasPrefix(c.Command[0], "/ms2m/") {
					t.Fatalf("command %v is not an ms2m binary", c.Command)
				}
				args := make([]string, 0, len(c.Args)+1)
				for _, a := range c.Args {
					args = append(args, strings.ReplaceAll(a, "$(POD_IP)", "10.0.0.7"))
				}
				cmd := exec.Command(filepath.Join(binDir, filepath.Base(c.Command[0])), append(args, "--help")...)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("%s refuses the chart's arguments %v: %v\n%s", c.Command[0], c.Args, err, firstLines(string(out), 3))
				}
			})
		}
	}
}

func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

func TestCertManager(t *testing.T) {
	objs := render(t, "--set", "certificates.certManager.enabled=true")
	for _, s := range objs.ofKind("Secret") {
		if s.Object["type"] == string(corev1.SecretTypeTLS) {
			t.Errorf("the chart generates Secret %s although cert-manager issues the certificate", s.GetName())
		}
	}
	dep := as(t, objs.get(t, "Deployment", release+"-manager"), &appsv1.Deployment{})
	var secretName string
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			secretName = v.Secret.SecretName
		}
	}
	var serving *unstructured.Unstructured
	for _, c := range objs.ofKind("Certificate") {
		if n, _, _ := unstructured.NestedString(c.Object, "spec", "secretName"); n == secretName {
			serving = c
		}
	}
	if serving == nil {
		t.Fatalf("no Certificate writes the Secret %s the manager mounts", secretName)
	}
	dnsNames, _, _ := unstructured.NestedStringSlice(serving.Object, "spec", "dnsNames")
	for _, host := range []string{release + "-webhook." + namespace + ".svc", release + "-scheduler-extender." + namespace + ".svc"} {
		if !contains(dnsNames, host) {
			t.Errorf("Certificate %s does not cover %s: %v", serving.GetName(), host, dnsNames)
		}
	}
	// The issuer is a CA Issuer whose CA is itself issued by the chart.
	issuerName, _, _ := unstructured.NestedString(serving.Object, "spec", "issuerRef", "name")
	caSecret, _, _ := unstructured.NestedString(objs.get(t, "Issuer", issuerName).Object, "spec", "ca", "secretName")
	var caIssued bool
	for _, c := range objs.ofKind("Certificate") {
		isCA, _, _ := unstructured.NestedBool(c.Object, "spec", "isCA")
		n, _, _ := unstructured.NestedString(c.Object, "spec", "secretName")
		caIssued = caIssued || isCA && n == caSecret
	}
	if !caIssued {
		t.Errorf("Issuer %s signs with Secret %q, which no CA Certificate writes", issuerName, caSecret)
	}
	for _, kind := range []string{"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"} {
		for _, wc := range objs.ofKind(kind) {
			if got, want := wc.GetAnnotations()["cert-manager.io/inject-ca-from"], namespace+"/"+serving.GetName(); got != want {
				t.Errorf("%s %s: cainjector annotation %q; want %q", kind, wc.GetName(), got, want)
			}
			hooks, _, _ := unstructured.NestedSlice(wc.Object, "webhooks")
			for _, h := range hooks {
				if b, _, _ := unstructured.NestedString(h.(map[string]any), "clientConfig", "caBundle"); b != "" {
					t.Errorf("%s %s has a caBundle the cainjector would fight with", kind, wc.GetName())
				}
			}
		}
	}

	t.Run("an issuer of your own", func(t *testing.T) {
		objs := render(t, "--set", "certificates.certManager.enabled=true,certificates.certManager.issuerRef.name=corp-ca,certificates.certManager.issuerRef.kind=ClusterIssuer")
		if n := len(objs.ofKind("Issuer")); n != 0 {
			t.Errorf("the chart creates %d Issuers although one is given", n)
		}
		c := objs.get(t, "Certificate", release+"-serving-cert")
		ref, _, _ := unstructured.NestedStringMap(c.Object, "spec", "issuerRef")
		if ref["name"] != "corp-ca" || ref["kind"] != "ClusterIssuer" {
			t.Errorf("issuerRef %v", ref)
		}
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestOptionalComponents(t *testing.T) {
	objs := render(t, everythingOn()...)

	t.Run("PodMonitor scrapes the injected sidecar's metrics port", func(t *testing.T) {
		pod := &corev1.Pod{}
		pod.Annotations = map[string]string{
			"ms2m.io/migratable": "true", "ms2m.io/kafka-brokers": "kafka:9092",
			"ms2m.io/kafka-topic": "t", "ms2m.io/kafka-group": "g", "ms2m.io/app-port": "8080",
		}
		pod.Spec.Containers = []corev1.Container{{Name: "app"}}
		if errs := webhooks.Mutate(pod, webhooks.DefaultSidecarOptions()); len(errs) > 0 {
			t.Fatal(errs)
		}
		var sidecarPorts []string
		for _, c := range pod.Spec.Containers {
			for _, p := range c.Ports {
				sidecarPorts = append(sidecarPorts, p.Name)
			}
		}
		eps, _, _ := unstructured.NestedSlice(objs.get(t, "PodMonitor", release+"-replay-sidecars").Object, "spec", "podMetricsEndpoints")
		port, _, _ := unstructured.NestedString(eps[0].(map[string]any), "port")
		if !contains(sidecarPorts, port) {
			t.Errorf("PodMonitor scrapes port %q; the sidecar has %v", port, sidecarPorts)
		}
	})
	t.Run("ServiceMonitor selects the metrics Service", func(t *testing.T) {
		sm := objs.get(t, "ServiceMonitor", release+"-manager")
		sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
		var matched []string
		for _, s := range objs.ofKind("Service") {
			if labels.SelectorFromSet(sel).Matches(labels.Set(s.GetLabels())) {
				matched = append(matched, s.GetName())
			}
		}
		if len(matched) != 1 || matched[0] != release+"-manager-metrics" {
			t.Errorf("ServiceMonitor selects Services %v", matched)
		}
	})
	t.Run("secondary scheduler runs the extender configuration", func(t *testing.T) {
		cm := as(t, objs.get(t, "ConfigMap", release+"-scheduler"), &corev1.ConfigMap{})
		var cfg configv1.KubeSchedulerConfiguration
		if err := yaml.UnmarshalStrict([]byte(cm.Data["config.yaml"]), &cfg); err != nil {
			t.Fatalf("not a KubeSchedulerConfiguration: %v", err)
		}
		if len(cfg.Profiles) != 1 || cfg.Profiles[0].SchedulerName == nil || *cfg.Profiles[0].SchedulerName != release+"-scheduler" {
			t.Errorf("profiles %+v", cfg.Profiles)
		}
		if len(cfg.Extenders) != 1 || cfg.Extenders[0].URLPrefix != "https://"+release+"-scheduler-extender."+namespace+".svc:8444" {
			t.Errorf("extenders %+v", cfg.Extenders)
		}
		spec := podSpecOf(t, objs, "Deployment", release+"-scheduler")
		expectLockedDown(t, spec.Containers[0])
		if !strings.HasSuffix(spec.Containers[0].Image, ":v1.33.0") {
			t.Errorf("scheduler image %s; want the cluster's minor version", spec.Containers[0].Image)
		}
	})
	t.Run("agent pushes with the registry credentials", func(t *testing.T) {
		spec := podSpecOf(t, objs, "DaemonSet", release+"-agent")
		secret := as(t, objs.get(t, "Secret", release+"-agent-registry"), &corev1.Secret{})
		if secret.Type != corev1.SecretTypeDockerConfigJson {
			t.Errorf("registry Secret type %s", secret.Type)
		}
		var dockerConfig string
		for _, e := range spec.Containers[0].Env {
			if e.Name == "DOCKER_CONFIG" {
				dockerConfig = e.Value
			}
		}
		var mounted bool
		for _, m := range spec.Containers[0].VolumeMounts {
			for _, v := range spec.Volumes {
				mounted = mounted || v.Name == m.Name && v.Secret != nil && v.Secret.SecretName == secret.Name && m.MountPath == dockerConfig
			}
		}
		if dockerConfig == "" || !mounted {
			t.Errorf("DOCKER_CONFIG=%q is not where the Secret %s is mounted", dockerConfig, secret.Name)
		}
	})
	t.Run("token reviewers", func(t *testing.T) {
		b := as(t, objs.get(t, "ClusterRoleBinding", release+"-replay-sidecar-token-review"), &rbacv1.ClusterRoleBinding{})
		if b.RoleRef.Name != "system:auth-delegator" || len(b.Subjects) != 1 || b.Subjects[0].Namespace != "shop" || b.Subjects[0].Name != "orders" {
			t.Errorf("binding %+v", b)
		}
	})
}

// metricNames are the Prometheus metrics the code registers.
func metricNames(t *testing.T) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`Name:\s*"(ms2m_[a-z0-9_]+)"`)
	names := map[string]bool{}
	err := filepath.Walk(filepath.Join(repoRoot(), "pkg"), func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		for _, m := range re.FindAllSubmatch(b, -1) {
			names[string(m[1])] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatal("found no ms2m_ metric in pkg/")
	}
	return names
}

var metricRef = regexp.MustCompile(`\bms2m_[a-z0-9_]+`)

func unknownMetrics(known map[string]bool, text string) []string {
	var unknown []string
	for _, ref := range metricRef.FindAllString(text, -1) {
		base := ref
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(ref, suffix); ok && known[b] {
				base = b
			}
		}
		if !known[base] && !contains(unknown, ref) {
			unknown = append(unknown, ref)
		}
	}
	return unknown
}

// Alerts and the operations guide name only metrics the code exports.
func TestAlertsAndOperationsDocUseRealMetrics(t *testing.T) {
	known := metricNames(t)
	rule := objs(t).get(t, "PrometheusRule", release)
	groups, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
	var exprs []string
	for _, g := range groups {
		rules, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
		for _, r := range rules {
			e, _, _ := unstructured.NestedString(r.(map[string]any), "expr")
			exprs = append(exprs, e)
		}
	}
	if u := unknownMetrics(known, strings.Join(exprs, "\n")); len(u) > 0 {
		t.Errorf("the PrometheusRule uses metrics the code does not export: %v", u)
	}
	doc, err := os.ReadFile(filepath.Join(repoRoot(), "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	if u := unknownMetrics(known, string(doc)); len(u) > 0 {
		t.Errorf("docs/operations.md names metrics the code does not export: %v", u)
	}
	for name := range known {
		if !strings.Contains(string(doc), name) {
			t.Errorf("docs/operations.md does not list the metric %s", name)
		}
	}
}

func objs(t *testing.T) objects { return render(t, everythingOn()...) }
