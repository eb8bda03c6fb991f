package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/ms2m/ms2m/examples/statefulapp"
	"github.com/ms2m/ms2m/internal/expect"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/checkpoint"
	"github.com/ms2m/ms2m/pkg/sandbox/kubelet"
	"github.com/ms2m/ms2m/pkg/simcriu"
)

// CheckpointInput configures CheckpointRestoreSpec.
type CheckpointInput struct {
	Cluster *Cluster
	// Messages delivered to the consumer before the checkpoint.
	Messages int
}

// CheckpointRestoreSpec: the kubelet checkpoint API refuses anonymous and
// unauthorized callers and, for a caller allowed nodes/checkpoint, returns
// an archive; a pod restored from that archive, shipped as an OCI
// checkpoint image, resumes on another node with the same state digest and
// goes on processing from there.
func CheckpointRestoreSpec(in CheckpointInput) features.Feature {
	var (
		ns, token, archive string
		source             *corev1.Pod
		before             string
	)
	return features.New("checkpoint through the kubelet API, restore on another node").
		Setup(func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			c := in.Cluster
			ns = c.Namespace(t, "checkpoint")
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "source", Labels: map[string]string{"app": "source"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{ConsumerContainer()}, TerminationGracePeriodSeconds: ptr.To(int64(5)),
					NodeSelector: map[string]string{v1.LabelCheckpointRestore: "true"}}}
			if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			pods := assertServing(ctx, t, c, ns, "app=source", 1)
			source = &pods[0]
			seqs := make([]int64, in.Messages)
			for i := range seqs {
				seqs[i] = int64(i)
			}
			if err := Deliver(ctx, ConsumerURL(source), 0, 0, seqs...); err != nil {
				t.Fatal(err)
			}
			st, err := statefulapp.FetchSummary(ctx, ConsumerURL(source))
			if err != nil {
				t.Fatal(err)
			}
			before = st.Digest
			token = checkpointerToken(ctx, t, c, ns)
			return ctx
		}).
		Assess("anonymous and unauthorized callers are refused", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			c := in.Cluster
			code, body := postCheckpoint(ctx, t, c, source, "app", "")
			if code != http.StatusUnauthorized {
				t.Errorf("no token: %d %s, want 401", code, body)
			}
			tr, err := c.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "default", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			code, body = postCheckpoint(ctx, t, c, source, "app", tr.Status.Token)
			if code != http.StatusForbidden {
				t.Errorf("token without nodes/checkpoint: %d %s, want 403", code, body)
			}
			code, body = postCheckpoint(ctx, t, c, source, "no-such-container", token)
			if code != http.StatusNotFound {
				t.Errorf("unknown container: %d %s, want 404", code, body)
			}
			return ctx
		}).
		Assess("an allowed caller gets an archive", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			// CRIU refuses while the app still holds a connection (here a
			// readiness probe's or the harness's, closing in CLOSE_WAIT, or
			// one not yet accepted, in flight); the agent asks again for
			// such a brief one, and so does this caller.
			var code int
			var body string
			expect.Eventually(t, "a checkpoint without a connection in the way", func() error {
				code, body = postCheckpoint(ctx, t, in.Cluster, source, "app", token)
				if code == http.StatusInternalServerError && (strings.Contains(body, "Connected TCP socket") || strings.Contains(body, "In-flight connection")) {
					return fmt.Errorf("%d %s", code, body)
				}
				return nil
			})
			if code != http.StatusOK {
				t.Fatalf("checkpoint: %d %s", code, body)
			}
			var resp struct {
				Items []string `json:"items"`
			}
			if err := json.Unmarshal([]byte(body), &resp); err != nil || len(resp.Items) != 1 {
				t.Fatalf("checkpoint response %q is not {\"items\":[path]}: %v", body, err)
			}
			archive = resp.Items[0]
			if in.Cluster.Sandbox == nil {
				return ctx // the archive lives on the node
			}
			f, err := os.Open(archive)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = f.Close() }()
			a, err := simcriu.ReadArchive(f)
			if err != nil {
				t.Fatal(err)
			}
			// Each runtime names the pod in spec.dump under its own key.
			flavour := nodeRuntime(ctx, t, in.Cluster, source.Spec.NodeName)
			podKey := map[string]string{kubelet.FlavourCRIO: "io.kubernetes.pod.name", kubelet.FlavourContainerd: "io.kubernetes.cri.sandbox-name"}[flavour]
			if a.Config.Name != "app" || len(a.Memory) == 0 || podKey == "" || a.Spec.Annotations[podKey] != "source" {
				t.Fatalf("archive of a %s node describes %q (pod %q under %q) with %d bytes of memory", flavour, a.Config.Name, a.Spec.Annotations[podKey], podKey, len(a.Memory))
			}
			// The engine that wrote it is the one the source node simulates.
			engine := map[string]string{kubelet.FlavourCRIO: "CRI-O", kubelet.FlavourContainerd: "containerd"}[flavour]
			got := readWithCheckpointctl(t, archive)
			if want := (checkpointctlView{Engine: engine, Pod: "source", Namespace: ns, Container: "app", BaseImage: ConsumerContainer().Image}); got != want {
				t.Fatalf("checkpointctl's library reads %+v, want %+v", got, want)
			}
			return ctx
		}).
		Assess("a pod restored from the checkpoint image resumes with the same state", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			c := in.Cluster
			if c.Sandbox == nil || c.Registry == "" {
				t.Skip("needs the sandbox's registry and the archive on this machine")
			}
			ref, err := name.ParseReference(fmt.Sprintf("%s/e2e/%s-source:app", c.Registry, ns))
			if err != nil {
				t.Fatal(err)
			}
			idx, err := checkpoint.Build(func() (io.ReadCloser, error) { return os.Open(archive) },
				checkpoint.Metadata{Container: "app", Pod: "source", Namespace: ns, BaseImage: Image, Runtime: simcriu.RuntimeName, Created: time.Now()})
			if err != nil {
				t.Fatal(err)
			}
			digest, err := checkpoint.Push(ctx, ref, idx)
			if err != nil {
				t.Fatal(err)
			}
			ctr := ConsumerContainer()
			ctr.Image = digest.String()
			restored := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "restored", Labels: map[string]string{"app": "restored"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{ctr}, TerminationGracePeriodSeconds: ptr.To(int64(5)),
					Affinity: notOnNode(source.Spec.NodeName, nodeRuntime(ctx, t, c, source.Spec.NodeName))}}
			if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, restored, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			pods := assertServing(ctx, t, c, ns, "app=restored", 1)
			target := &pods[0]
			if target.Spec.NodeName == source.Spec.NodeName {
				t.Fatalf("restored on the source node %s", target.Spec.NodeName)
			}
			st, err := statefulapp.FetchSummary(ctx, ConsumerURL(target))
			if err != nil {
				t.Fatal(err)
			}
			if !st.Restored || st.Digest != before {
				t.Fatalf("restored pod: restored=%v digest %s, want the source's %s", st.Restored, st.Digest, before)
			}
			// Both go on from the same state: the same next messages give
			// the same digest, and a redelivered old offset changes nothing.
			n := int64(in.Messages)
			for _, p := range []*corev1.Pod{source, target} {
				if err := Deliver(ctx, ConsumerURL(p), 0, n-1, n-1, n, n+1); err != nil {
					t.Fatal(err)
				}
			}
			a, errA := statefulapp.FetchSummary(ctx, ConsumerURL(source))
			b, errB := statefulapp.FetchSummary(ctx, ConsumerURL(target))
			if errA != nil || errB != nil || a.Digest != b.Digest || a.Applied != n+2 {
				t.Fatalf("after the same messages: source %+v (%v), restored %+v (%v)", a, errA, b, errB)
			}
			return ctx
		}).Feature()
}

// notOnNode requires another node than node, of the given runtime (a
// checkpoint restores only in the runtime that wrote it; the ms2m
// extender enforces it for migrations, this plain pod bypasses it).
func notOnNode(node, runtime string) *corev1.Affinity {
	return &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{
			{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpNotIn, Values: []string{node}},
			{Key: v1.LabelRuntime, Operator: corev1.NodeSelectorOpIn, Values: []string{runtime}},
		}}},
	}}}
}

// nodeRuntime is the runtime label of a node (ms2m.io/runtime).
func nodeRuntime(ctx context.Context, t *testing.T, c *Cluster, node string) string {
	t.Helper()
	n, err := c.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n.Labels[v1.LabelRuntime]
}

// checkpointerToken makes a service account allowed to create
// nodes/checkpoint (what the ms2m agent gets) and returns its token.
func checkpointerToken(ctx context.Context, t *testing.T, c *Cluster, ns string) string {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "checkpointer"}}
	if _, err := c.Client.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "e2e-checkpointer-" + ns},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes/checkpoint"}, Verbs: []string{"create"}}}}
	if _, err := c.Client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: ns}}}
	if _, err := c.Client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Client.RbacV1().ClusterRoleBindings().Delete(context.Background(), binding.Name, metav1.DeleteOptions{})
		_ = c.Client.RbacV1().ClusterRoles().Delete(context.Background(), role.Name, metav1.DeleteOptions{})
	})
	tr, err := c.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa.Name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// postCheckpoint calls the kubelet API of the pod's node, found as a
// client finds it: the node's InternalIP and kubelet endpoint port.
func postCheckpoint(ctx context.Context, t *testing.T, c *Cluster, pod *corev1.Pod, ctr, token string) (int, string) {
	t.Helper()
	node, err := c.Client.CoreV1().Nodes().Get(ctx, pod.Spec.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ip string
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			ip = a.Address
		}
	}
	tlsCfg := &tls.Config{InsecureSkipVerify: c.KubeletCA == nil} //nolint:gosec // real kubelets are often self-signed
	if c.KubeletCA != nil {
		tlsCfg.RootCAs = x509.NewCertPool()
		tlsCfg.RootCAs.AppendCertsFromPEM(c.KubeletCA)
	}
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	url := fmt.Sprintf("https://%s/checkpoint/%s/%s/%s?timeout=30", net.JoinHostPort(ip, strconv.Itoa(int(node.Status.DaemonEndpoints.KubeletEndpoint.Port))),
		pod.Namespace, pod.Name, ctr)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
