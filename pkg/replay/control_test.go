package replay

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/ms2m/ms2m/internal/testenv"
)

// TestControlAPIAcceptsOnlyTokensForThisSidecar runs the control API with
// tokens and keys of a real kube-apiserver: only the manager's service
// account, with a token for this sidecar's pod, may steer the sidecar; the
// sidecar reads the issuer's keys with a service account that has no role.
func TestControlAPIAcceptsOnlyTokensForThisSidecar(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	cs := kubernetes.NewForConfigOrDie(env.Config)
	ctx := context.Background()
	account := func(sa string) {
		if _, err := cs.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	token := func(sa string, audiences ...string) string {
		tr, err := cs.CoreV1().ServiceAccounts("default").CreateToken(ctx, sa, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{Audiences: audiences}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("TokenRequest: %v", err)
		}
		return tr.Status.Token
	}
	for _, sa := range []string{"ms2m-manager", "intruder", "orders"} {
		account(sa)
	}
	this, other := ControlAudience("default", "uid-of-this-pod"), ControlAudience("default", "uid-of-another-pod")
	managerToken, intruderToken := token("ms2m-manager", this), token("intruder", this)
	otherPodsToken, apiToken := token("ms2m-manager", other), token("ms2m-manager")

	a := newApp()
	h := start(t, a)
	h.b.produce(t, 0, 10)
	expectExactly(t, a, 10)
	// What the sidecar uses: the app's service account ("orders", bound to
	// no role) reads the issuer's keys.
	keys, err := NewIssuerKeys(&rest.Config{Host: env.Config.Host, TLSClientConfig: rest.TLSClientConfig{CAData: env.Config.CAData}, BearerToken: token("orders")})
	if err != nil {
		t.Fatal(err)
	}
	verifier := &TokenVerifier{Audience: this, Keys: keys}
	ctl := &Control{Engine: h.engine, Auth: verifier, AllowedUsers: sets.New("system:serviceaccount:default:ms2m-manager")}
	srv := httptest.NewServer(ctl.Handler())
	t.Cleanup(srv.Close)

	call := func(method, path, token, body string) (int, string) {
		return controlClient{t: t, srv: srv, token: token}.call(method, path, body)
	}

	for _, tc := range []struct {
		name, method, path, token, body string
		status                          int
		contains                        string
	}{
		{"no token", "POST", "/pause", "", "", 401, "bearer token required"},
		{"forged token", "POST", "/pause", "not-a-token", "", 401, "unauthenticated"},
		{"the manager's token for another sidecar", "POST", "/pause", otherPodsToken, "", 401, "not for this sidecar"},
		{"the manager's API credential", "POST", "/pause", apiToken, "", 401, "not for this sidecar"},
		{"another service account", "POST", "/pause", intruderToken, "", 403, "system:serviceaccount:default:intruder"},
		{"a token whose signature is another's", "POST", "/pause", resign(managerToken, intruderToken), "", 401, "not signed by the cluster"},
		{"ready while live", "GET", "/readyz", "", "", 200, "ok"},
		{"position", "GET", "/position", managerToken, "", 200, `"next":{"0":10}`},
		{"pause", "POST", "/pause", managerToken, `{"timeoutSeconds":5}`, 200, `"paused":true`},
		{"pause again", "POST", "/pause", managerToken, "", 200, `"next":{"0":10}`},
		{"still ready while paused (a checkpoint pause is brief)", "GET", "/readyz", "", "", 200, "ok"},
		{"unknown field", "POST", "/pause", managerToken, `{"timeout":5}`, 400, "unknown field"},
		{"negative timeout", "POST", "/pause", managerToken, `{"timeoutSeconds":-1}`, 400, "timeoutSeconds"},
		{"handover without fence", "POST", "/handover", managerToken, `{}`, 400, "fence: required"},
		{"handover on a live source", "POST", "/handover", managerToken, `{"fence":{"0":10}}`, 409, "replaying target"},
		{"replay without a token", "POST", "/replay", "", `{"from":{"0":0}}`, 401, "bearer token required"},
		{"replay by another service account", "POST", "/replay", intruderToken, `{"from":{"0":0}}`, 403, "may not control"},
		{"replay with a bad partition", "POST", "/replay", managerToken, `{"from":{"x":0}}`, 400, "from: partition"},
		{"replay on a live source", "POST", "/replay", managerToken, `{"from":{"0":0}}`, 409, "live sidecar cannot replay"},
		{"resume", "POST", "/resume", managerToken, "", 200, `"paused":false`},
		{"ready after resume", "GET", "/readyz", "", "", 200, "ok"},
	} {
		status, body := call(tc.method, tc.path, tc.token, tc.body)
		if status != tc.status || !strings.Contains(body, tc.contains) {
			t.Errorf("%s: %s %s = %d %q; want %d containing %q", tc.name, tc.method, tc.path, status, body, tc.status, tc.contains)
		}
	}

	// A token is good until it expires (TokenRequest's default: an hour).
	later := &TokenVerifier{Audience: this, Keys: keys, Now: func() time.Time { return time.Now().Add(2 * time.Hour) }}
	if user, err := later.Authenticate(ctx, managerToken); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("the manager's token two hours later: %q, %v; want expired", user, err)
	}

	// Fence through the API reports F = everything acknowledged.
	status, body := call("POST", "/fence", managerToken, "")
	var pos Position
	if status != 200 || json.Unmarshal([]byte(body), &pos) != nil || pos.Fence[0] != 10 || pos.Mode != ModeFenced {
		t.Fatalf("fence = %d %s; want mode fenced at offset 10", status, body)
	}
	if status, body := call("GET", "/readyz", "", ""); status != 503 || !strings.Contains(body, "not live") {
		t.Fatalf("fenced sidecar: GET /readyz = %d %q; want 503 not live", status, body)
	}
	// A resume ends a pause only: one that arrives after the fence is
	// refused, and only the rollback ends the fence.
	if status, body := call("POST", "/resume", managerToken, ""); status != 409 || !strings.Contains(body, "POST /rejoin") {
		t.Fatalf("resume of a fenced sidecar = %d %q; want 409 naming the rollback", status, body)
	}
	if status, body := call("POST", "/rejoin", managerToken, ""); status != 200 || !strings.Contains(body, `"mode":"live"`) {
		t.Fatalf("rejoin of a fenced sidecar = %d %q; want 200, live", status, body)
	}
}

// resign is token with the signature of from: a token whose claims were
// changed after it was signed.
func resign(token, from string) string {
	return token[:strings.LastIndex(token, ".")] + from[strings.LastIndex(from, "."):]
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add(`{"timeoutSeconds":5}`)
	f.Add(`{"fence":{"0":10,"3":7}}`)
	f.Add(``)
	f.Add(`{"fence":{"-1":1}}`)
	f.Add(`{"from":{"0":3,"1":0},"fence":{"0":10,"1":4}}`)
	f.Add(`{"from":{"01":3}}`)
	f.Add(`{"from":{"0":3}} {}`)
	f.Fuzz(func(t *testing.T, body string) {
		call, err := DecodeRequest(strings.NewReader(body))
		if err != nil {
			return
		}
		if call.Timeout <= 0 || call.Timeout > time.Hour {
			t.Fatalf("accepted timeout %s", call.Timeout)
		}
		for name, offsets := range map[string]map[int]int64{"fence": call.Fence, "from": call.From} {
			for p, off := range offsets {
				if p < 0 || p > maxPartition || off < 0 {
					t.Fatalf("accepted %s %v", name, offsets)
				}
			}
		}
		// What is accepted means what it says: encoding the decoded call
		// again gives the same call.
		again, err := DecodeRequest(strings.NewReader(string(mustJSON(t, Request{
			TimeoutSeconds: int(call.Timeout / time.Second), Fence: wireOffsets(call.Fence), From: wireOffsets(call.From)}))))
		if err != nil || again.Timeout != call.Timeout || !maps.Equal(again.Fence, call.Fence) || !maps.Equal(again.From, call.From) {
			t.Fatalf("%q decoded to %+v, re-encoded to %+v (%v)", body, call, again, err)
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A sidecar runs in a tenant's pod: an answer too large to be a position
// is refused before it reaches the controller's memory or a status.
func TestClientRefusesAnOversizedAnswer(t *testing.T) {
	for name, body := range map[string]string{
		"a huge body":           `{"mode":"live","pad":"` + strings.Repeat("x", MaxPositionBytes) + `"}`,
		"too many partitions":   `{"mode":"live","next":{` + manyPartitions(MaxPositionPartitions+1) + `}}`,
		"a small honest answer": `{"mode":"live","next":{"0":12}}`,
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, body) }))
			defer srv.Close()
			pos, err := (&Client{}).Position(context.Background(), Endpoint{Addr: strings.TrimPrefix(srv.URL, "http://")})
			if name == "a small honest answer" {
				if err != nil || pos.Next[0] != 12 {
					t.Fatalf("%+v, %v", pos, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "refused") {
				t.Fatalf("%s: %v; want refused", name, err)
			}
		})
	}
}

func manyPartitions(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`"%d":1`, i)
	}
	return strings.Join(parts, ",")
}

// The node agent that checkpoints the app pauses and resumes its sidecar
// itself (the pause lasts the dump, not the controller's round trips); it
// may do nothing else, and only from a pod on the sidecar's node, as the
// API server's node claim in a token bound to that pod says. Real
// kube-apiserver tokens.
func TestNodeAgentMayOnlyPauseAndResumeOnItsNode(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	cs := kubernetes.NewForConfigOrDie(env.Config)
	ctx := context.Background()
	const agent = "system:serviceaccount:default:ms2m-agent"
	for _, sa := range []string{"ms2m-agent", "orders"} {
		if _, err := cs.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	this := ControlAudience("default", "uid-of-this-pod")
	// agentOn is a token of the agent's account for this sidecar, bound to
	// an agent pod on node ("" for one bound to no pod).
	agentOn := func(node string) string {
		spec := authenticationv1.TokenRequestSpec{Audiences: []string{this}}
		if node != "" {
			if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			pod, err := cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "agent-" + node},
				Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: "ms2m-agent", Containers: []corev1.Container{{Name: "agent", Image: "agent"}}}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
		}
		tr, err := cs.CoreV1().ServiceAccounts("default").CreateToken(ctx, "ms2m-agent", &authenticationv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("TokenRequest: %v", err)
		}
		return tr.Status.Token
	}
	here, elsewhere, unbound := agentOn("node-a"), agentOn("node-b"), agentOn("")

	a := newApp()
	h := start(t, a)
	h.b.produce(t, 0, 10)
	expectExactly(t, a, 10)
	sa, err := cs.CoreV1().ServiceAccounts("default").CreateToken(ctx, "orders", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := NewIssuerKeys(&rest.Config{Host: env.Config.Host, TLSClientConfig: rest.TLSClientConfig{CAData: env.Config.CAData}, BearerToken: sa.Status.Token})
	if err != nil {
		t.Fatal(err)
	}
	ctl := &Control{Engine: h.engine, Auth: &TokenVerifier{Audience: this, Keys: keys},
		AllowedUsers: sets.New("system:serviceaccount:default:ms2m-manager"), NodeAgents: sets.New(agent), Node: "node-a"}
	srv := httptest.NewServer(ctl.Handler())
	t.Cleanup(srv.Close)

	for _, tc := range []struct {
		name, method, path, token, body string
		status                          int
		contains                        string
	}{
		{"the agent of another node pauses", "POST", "/pause", elsewhere, "", 403, `bound to a pod on node "node-b", this sidecar runs on "node-a"`},
		{"an agent token bound to no pod pauses", "POST", "/pause", unbound, "", 403, "only sidecars on its own node"},
		{"the agent of this node pauses: O in the answer", "POST", "/pause", here, "", 200, `"checkpoint":{"0":10}`},
		{"it may not fence", "POST", "/fence", here, "", 403, "may only pause and resume"},
		{"nor hand over", "POST", "/handover", here, `{"fence":{"0":10}}`, 403, "may only pause and resume"},
		{"nor replay", "POST", "/replay", here, `{"from":{"0":0}}`, 403, "may only pause and resume"},
		{"nor abort", "POST", "/abort", here, "", 403, "may only pause and resume"},
		{"nor end a fence (the rollback)", "POST", "/rejoin", here, "", 403, "may only pause and resume"},
		{"the agent of another node resumes", "POST", "/resume", elsewhere, "", 403, "only sidecars on its own node"},
		{"the agent of this node resumes: the pause's times", "POST", "/resume", here, "", 200, `"resumedAt":`},
	} {
		status, body := controlClient{t: t, srv: srv, token: tc.token}.call(tc.method, tc.path, tc.body)
		if status != tc.status || !strings.Contains(body, tc.contains) {
			t.Errorf("%s: %s %s = %d %q; want %d containing %q", tc.name, tc.method, tc.path, status, body, tc.status, tc.contains)
		}
	}
	if pos := h.engine.Position(); pos.Paused || pos.Mode != ModeLive {
		t.Fatalf("after the agent's pause and resume: %+v; want live, not paused", pos)
	}
}
