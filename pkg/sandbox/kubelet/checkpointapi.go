package kubelet

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ms2m/ms2m/pkg/simcriu"
)

// defaultCheckpointTimeout applies when the caller gives no ?timeout=.
const defaultCheckpointTimeout = 4 * time.Minute

// handler is the node's kubelet API: the checkpoint endpoint (and
// /healthz), authenticated and authorized as the kubelet does with webhook
// authn/authz: TokenReview of the bearer token, then a SubjectAccessReview
// for create on nodes/checkpoint.
func (n *node) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("POST /checkpoint/{namespace}/{pod}/{container}", n.checkpoint)
	return mux
}

// CheckpointResponse is the kubelet's answer to a checkpoint request.
type CheckpointResponse struct {
	Items []string `json:"items"`
}

// The kubelet's webhook authentication and authorization caches, at its
// defaults (--authentication-token-webhook-cache-ttl 2m,
// --authorization-webhook-cache-authorized-ttl 5m): a caller it let in
// is let in again without a TokenReview or SubjectAccessReview until they
// expire. Refusals are not cached here (the kubelet keeps an unauthorized
// answer 30 s): a caller granted the right meanwhile is let in at once.
const (
	authnCacheTTL = 2 * time.Minute
	authzCacheTTL = 5 * time.Minute
)

// authCache is one node's kubelet's memory of callers it let in.
type authCache struct {
	mu      sync.Mutex
	users   map[string]cachedUser // by bearer token
	allowed map[string]time.Time  // by authzKey, until
}

type cachedUser struct {
	user  authenticationv1.UserInfo
	until time.Time
}

func (a *authCache) user(token string, now time.Time) (authenticationv1.UserInfo, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, ok := a.users[token]
	return u.user, ok && now.Before(u.until)
}

func (a *authCache) authenticated(token string, u authenticationv1.UserInfo, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.users == nil {
		a.users = map[string]cachedUser{}
	}
	for t, c := range a.users {
		if !now.Before(c.until) {
			delete(a.users, t)
		}
	}
	a.users[token] = cachedUser{user: u, until: now.Add(authnCacheTTL)}
}

// authzKey is what a SubjectAccessReview of user for this node's
// checkpoint depends on.
func authzKey(u authenticationv1.UserInfo) string {
	b, _ := json.Marshal(u)
	return string(b)
}

func (a *authCache) isAllowed(u authenticationv1.UserInfo, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	until, ok := a.allowed[authzKey(u)]
	return ok && now.Before(until)
}

func (a *authCache) allow(u authenticationv1.UserInfo, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.allowed == nil {
		a.allowed = map[string]time.Time{}
	}
	for k, until := range a.allowed {
		if !now.Before(until) {
			delete(a.allowed, k)
		}
	}
	a.allowed[authzKey(u)] = now.Add(authzCacheTTL)
}

func (n *node) authorize(ctx context.Context, w http.ResponseWriter, req *http.Request) bool {
	token, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return false
	}
	c := n.f.opts.Client
	now := time.Now()
	u, known := n.auth.user(token, now)
	if !known {
		tr, err := c.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
		if err != nil {
			http.Error(w, "authentication failed: "+err.Error(), http.StatusInternalServerError)
			return false
		}
		if !tr.Status.Authenticated {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return false
		}
		u = tr.Status.User
		n.auth.authenticated(token, u, now)
	}
	if n.auth.isAllowed(u, now) {
		return true
	}
	extra := map[string]authorizationv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar, err := c.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: u.Username, Groups: u.Groups, UID: u.UID, Extra: extra,
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "create", Resource: "nodes", Subresource: "checkpoint", Name: n.spec.Name},
	}}, metav1.CreateOptions{})
	if err != nil {
		http.Error(w, "authorization failed: "+err.Error(), http.StatusInternalServerError)
		return false
	}
	if !sar.Status.Allowed {
		http.Error(w, fmt.Sprintf("Forbidden (user=%s, verb=create, resource=nodes, subresource=checkpoint)", u.Username), http.StatusForbidden)
		return false
	}
	n.auth.allow(u, now)
	return true
}

func (n *node) checkpoint(w http.ResponseWriter, req *http.Request) {
	timeout := defaultCheckpointTimeout
	if t := req.URL.Query().Get("timeout"); t != "" {
		s, err := strconv.Atoi(t)
		if err != nil || s <= 0 {
			http.Error(w, fmt.Sprintf("invalid timeout %q: want a positive number of seconds", t), http.StatusBadRequest)
			return
		}
		timeout = time.Duration(s) * time.Second
	}
	ctx, cancel := context.WithTimeout(req.Context(), timeout)
	defer cancel()
	if !n.authorize(ctx, w, req) {
		return
	}
	ns, podName, ctrName := req.PathValue("namespace"), req.PathValue("pod"), req.PathValue("container")
	pr, c, err := n.f.lookup(n.spec.Name, ns, podName, ctrName)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	path, err := "", injectedFault(n.f, ns, podName)
	if err == nil {
		path, err = n.dump(ctx, pr, c, ns, podName)
	}
	if err != nil {
		http.Error(w, fmt.Sprintf("checkpointing of %s/%s/%s failed (%v)", ns, podName, ctrName, err), http.StatusInternalServerError)
		return
	}
	n.f.log.Info("checkpointed container (SIMULATED CRIU)", "pod", ns+"/"+podName, "container", ctrName, "archive", path)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(CheckpointResponse{Items: []string{path}})
}

// dump asks the process for its memory state and writes the archive where
// the kubelet would: <node dir>/checkpoints/checkpoint-<pod>_<ns>-<ctr>-<time>.tar.
func (n *node) dump(ctx context.Context, pr *podRuntime, c *container, ns, pod string) (string, error) {
	pr.mu.Lock()
	running, processless, socket, cgroup := c.st.running, c.processless, c.hookSocket, c.cgroup
	pid := 0
	if c.cmd != nil && c.cmd.Process != nil {
		pid = c.cmd.Process.Pid
	}
	base := c.spec.Image
	if c.baseImage != "" { // a restored container checkpointed again
		base = c.baseImage
	}
	a := &simcriu.Archive{
		Config: simcriu.ContainerConfig{
			ID: c.st.containerID, Name: c.spec.Name, RootfsImage: base, RootfsImageRef: simulatedImageID(base),
			RootfsImageName: base, Runtime: simcriu.RuntimeName, CreatedTime: c.st.startedAt,
		},
		Spec: simcriu.Spec{OCIVersion: "1.0.2", Process: simcriu.Process{Args: c.argv, Env: c.env, Cwd: "/",
			User: simcriu.User{UID: c.uid, GID: c.gid}},
			Annotations: crioSpecAnnotations(pod, ns, string(pr.uid), c.spec.Name, base, simulatedImageID(base), pr.ip, c.st.restartCount, c.st.startedAt)},
	}
	if n.spec.flavour() == FlavourContainerd {
		a.Spec.Annotations = containerdSpecAnnotations(pod, ns, string(pr.uid), c.spec.Name, base)
		a.Status = simcriu.ContainerdStatus{CreatedAt: c.st.startedAt.UnixNano(), StartedAt: c.st.startedAt.UnixNano(), Pid: uint32(pid)}
	}
	pr.mu.Unlock()
	if !running {
		return "", fmt.Errorf("container is not running")
	}
	dir := filepath.Join(n.root(), "checkpoints")
	if err := mkdir(dir); err != nil {
		return "", err
	}
	start := time.Now()
	if !processless {
		// The app's state, through the hook (the process must run for it).
		mem, err := simcriu.Dump(ctx, socket)
		if err != nil {
			return "", err
		}
		a.Memory = mem
		pages, unpause, err := n.freezeAndDump(ctx, pid, cgroup, dir, a)
		if err != nil {
			return "", err
		}
		defer func() { _ = pages.Close(); _ = os.Remove(pages.Name()) }()
		a.Pages = pages
		// containerd resumes the container once the dump and the rootfs
		// diff are taken, and writes the archive while it runs
		// (client/task.go Checkpoint, then the CRI's CheckpointContainer);
		// CRI-O (1.29+) keeps it paused until the archive is written
		// (internal/lib/checkpoint.go ContainerCheckpoint), so that no
		// file changes after the dump.
		if n.spec.flavour() == FlavourContainerd {
			unpause()
		} else {
			defer unpause()
		}
	}
	a.DumpDuration = time.Since(start)
	a.Config.CheckpointedTime = time.Now().UTC()
	path := filepath.Join(dir, fmt.Sprintf("checkpoint-%s_%s-%s-%s.tar", pod, ns, c.spec.Name, a.Config.CheckpointedTime.Format("2006-01-02T15:04:05.000000000Z")))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", err
	}
	if err := a.Write(f); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return "", err
	}
	return path, f.Close()
}

// freezeAndDump does what the runtime does for a checkpoint: it pauses
// the container (its cgroup frozen; here the processes are stopped) and
// runs the (SIMULATED) CRIU, a process of its own as runc and CRIU are,
// which thaws the cgroup while it holds the processes and freezes it again
// when done (see simcriu.RunDump). It returns the pages CRIU wrote (an
// image file at offset 0; a.PagesSize set) and unpause, the runtime's
// resume (the container runs on: --leave-running). On an error the
// container is resumed already. The container's cgroup therefore shows
// frozen 1, 0, 1, 0, as on a node.
func (n *node) freezeAndDump(ctx context.Context, pid int, cg simcriu.Cgroup, dir string, a *simcriu.Archive) (pages *os.File, unpause func(), err error) {
	f, err := os.CreateTemp(dir, ".pages-*.img")
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	thaw, err := simcriu.Frozen(pid)
	if err != nil {
		return nil, nil, err
	}
	frozen := func(v bool) {
		if cg == "" {
			return
		}
		if err := cg.Freeze(v); err != nil {
			n.f.log.Error(err, "writing the SIMULATED cgroup", "cgroup", string(cg))
		}
	}
	frozen(true) // the runtime's pause
	unpause = func() { frozen(false); thaw() }
	res, err := n.runSimulatedCRIU(ctx, pid, cg, f.Name())
	if err != nil {
		unpause()
		return nil, nil, err
	}
	a.ConnectedTCP, a.PagesSize = res.Connected, res.PagesSize
	return f, unpause, nil
}

// root is the node's directory, which stands for its root filesystem
// where the sandbox reads node files: etc/criu/*.conf (see
// simcriu.CRIUConfigFiles), checkpoints/.
func (n *node) root() string { return filepath.Join(n.f.opts.Dir, n.spec.Name) }

// restoreSockets applies the node's CRIU configuration to the connected
// sockets a checkpoint holds, as CRIU's restore does.
func (n *node) restoreSockets(connected []string, podIP string) error {
	opts, err := simcriu.ReadCRIUOptions(n.root())
	if err != nil {
		return err
	}
	return opts.CheckRestore(connected, podIP)
}

// AnnotationFailCheckpoint on a pod makes the SIMULATED CRIU fail its
// checkpoints with the annotation's value as the error, the way a real
// CRIU dump can fail: a fault injected for tests, sandbox only.
const AnnotationFailCheckpoint = "sandbox.ms2m.io/fail-checkpoint"

func injectedFault(f *Fleet, ns, pod string) error {
	p, err := f.pods.Pods(ns).Get(pod)
	if err != nil {
		return nil
	}
	if why, ok := p.Annotations[AnnotationFailCheckpoint]; ok {
		return fmt.Errorf("SIMULATED CRIU fault (%s): %s", AnnotationFailCheckpoint, why)
	}
	return nil
}
