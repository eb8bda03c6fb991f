// Package agent is the ms2m node agent (a DaemonSet): on the migration's
// source node it checkpoints the app container through its own kubelet's
// checkpoint API (the narrow nodes/checkpoint permission, not
// nodes/proxy), packs the archive into an OCI checkpoint image, pushes it,
// and removes the archive. It also probes whether its node can restore
// checkpoints and labels the node for the scheduler extender.
//
// The agent never writes a StatefulMigration's status: it reports through
// the annotations v1alpha1.AnnotationAgentCheckpoint and
// AnnotationAgentImage, and the controller, the status's only writer,
// takes it from there.
package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/checkpoint"
)

// Options configure the agent.
type Options struct {
	// NodeName is the node the agent runs on.
	NodeName string
	// KubeletCAFile verifies the kubelet's serving certificate; with
	// KubeletInsecureTLS the certificate is not verified (self-signed
	// kubelets), as metrics-server's --kubelet-insecure-tls.
	KubeletCAFile      string
	KubeletInsecureTLS bool
	// Repository receives checkpoint images when a migration names none.
	Repository string
	// AllowedRegistries are the registry hosts (host[:port]) checkpoint
	// images may be pushed to; empty: Repository's registry only.
	AllowedRegistries []string
	// PlainHTTPRegistries are reached without TLS (a registry on the
	// node's loopback, the sandbox's); every other is TLS only.
	PlainHTTPRegistries []string
	// CheckpointDir is the kubelet's checkpoint directory (default
	// DefaultCheckpointDir): the only place archives are read from.
	CheckpointDir string
	// Token is the bearer token for the kubelet (the agent's service
	// account token).
	Token func() (string, error)
	// CheckpointTimeout bounds one kubelet checkpoint call.
	CheckpointTimeout time.Duration
	// SidecarControlPort is the replay sidecars' control port (default
	// DefaultSidecarControlPort), as the manager injects it.
	SidecarControlPort int32
	// SidecarTokens issues a token for a sidecar's control API audience,
	// bound to the agent's pod (see clientconfig.NewPodAudienceTokens).
	SidecarTokens func(ctx context.Context, audience string) (string, error)
	// HostRoot is where the host's filesystem is mounted (default /):
	// the containers' cgroups are read under it (see freezer.go).
	HostRoot string
}

// Reconciler acts on the migrations leaving its node.
type Reconciler struct {
	Client client.Client
	// APIReader reads from the API server, not the cache (Client if nil):
	// the last look before a checkpoint (see checkpointDue).
	APIReader client.Reader
	Opts      Options
	// Kubelet is the client for the kubelet API (built from Opts if nil).
	Kubelet *http.Client
	// Remote are extra options for pushing images.
	Remote []remote.Option
	// Sidecar is the client for the replay sidecars' control API
	// (http.DefaultClient if nil).
	Sidecar *http.Client
	// readCgroupEvents reads a cgroup.events file (os.ReadFile if nil).
	readCgroupEvents func(string) ([]byte, error)
}

// +kubebuilder:rbac:groups=migration.ms2m.io,resources=statefulmigrations,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=nodes/checkpoint,verbs=create
// +kubebuilder:rbac:groups="",namespace=ms2m-system,resources=serviceaccounts/token,verbs=create,resourceNames=ms2m-agent

// SetupWithManager watches the StatefulMigrations whose source is this node.
func (r *Reconciler) SetupWithManager(mgr manager.Manager) error {
	if r.Kubelet == nil {
		c, err := kubeletClient(r.Opts)
		if err != nil {
			return err
		}
		r.Kubelet = c
	}
	mine := predicate.NewPredicateFuncs(func(o client.Object) bool {
		m, ok := o.(*v1.StatefulMigration)
		return ok && m.Status.SourceNode == r.Opts.NodeName
	})
	return builder.ControllerManagedBy(mgr).Named("agent").
		For(&v1.StatefulMigration{}, builder.WithPredicates(mine, predicate.Funcs{
			DeleteFunc: func(event.DeleteEvent) bool { return false },
		})).
		WithOptions(controller.Options{MaxConcurrentReconciles: Workers}).
		Complete(r)
}

// Workers is how many migrations leaving its node the agent serves at
// once: it calls the source's sidecar, in a tenant's pod, so one that does
// not answer holds one worker (for PauseTimeout and a little), not the
// node's other checkpoints. More than the manager's default
// --max-outbound-migrations-per-node (2), plus finished ones' clean-ups.
const Workers = 4

func kubeletClient(o Options) (*http.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.KubeletInsecureTLS} //nolint:gosec // opt-in, for self-signed kubelets
	if o.KubeletCAFile != "" {
		pem, err := os.ReadFile(o.KubeletCAFile)
		if err != nil {
			return nil, fmt.Errorf("--kubelet-ca-file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--kubelet-ca-file %s: no certificate in it", o.KubeletCAFile)
		}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}, nil
}

// Reconcile runs the agent's part of the current phase, once.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	m := &v1.StatefulMigration{}
	if err := r.Client.Get(ctx, req.NamespacedName, m); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if m.Status.SourceNode != r.Opts.NodeName {
		return reconcile.Result{}, nil
	}
	_, haveCheckpoint := m.Annotations[v1.AnnotationAgentCheckpoint]
	_, haveImage := m.Annotations[v1.AnnotationAgentImage]
	switch {
	case m.Status.Phase == v1.PhaseCheckpointing && !haveCheckpoint:
		if due, err := r.checkpointDue(ctx, m); !due {
			return reconcile.Result{}, err
		}
		res, err := r.pauseCheckpointResume(ctx, m)
		if errors.Is(err, errTryAgain) {
			// Nothing consumed yet, or the sidecar not answering for now:
			// the source serves on; look again.
			return reconcile.Result{RequeueAfter: time.Second}, nil
		}
		if err == nil {
			var ctr string
			if ctr, err = r.appContainer(ctx, m); err == nil {
				err = checkArchive(r.Opts.CheckpointDir, res.Archive, m, ctr)
			}
		}
		return reconcile.Result{}, r.report(ctx, m, v1.AnnotationAgentCheckpoint, res, err)
	case m.Status.Phase == v1.PhaseTransferring && haveCheckpoint && !haveImage:
		res, err := r.push(ctx, m)
		return reconcile.Result{}, r.report(ctx, m, v1.AnnotationAgentImage, res, err)
	case m.Status.Phase.IsTerminal():
		r.cleanup(ctx, m)
	}
	return reconcile.Result{}, nil
}

// checkpointDue reads m from the API server and reports whether its
// checkpoint is still to be taken. The cache can lag behind this agent's
// own report: an event that arrived during a checkpoint requeues the
// migration at once, and a cache without the report would pause the
// source and checkpoint it a second time, in the middle of a later phase,
// and replace the reported archive and O with the second checkpoint's
// (whose state is past the O the controller replays from).
func (r *Reconciler) checkpointDue(ctx context.Context, m *v1.StatefulMigration) (bool, error) {
	reader := r.APIReader
	if reader == nil {
		reader = r.Client
	}
	fresh := &v1.StatefulMigration{}
	if err := reader.Get(ctx, client.ObjectKeyFromObject(m), fresh); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	_, reported := fresh.Annotations[v1.AnnotationAgentCheckpoint]
	due := fresh.UID == m.UID && fresh.Status.Phase == v1.PhaseCheckpointing && !reported
	if !due {
		log.FromContext(ctx).Info("not checkpointing again: the cache is behind the API server", "migration", m.Name,
			"phase", fresh.Status.Phase, "reported", reported)
	}
	return due, nil
}

// report records the step's result (or error) on the migration.
func (r *Reconciler) report(ctx context.Context, m *v1.StatefulMigration, key string, res v1.AgentResult, stepErr error) error {
	res.Node = r.Opts.NodeName
	if stepErr != nil {
		res = v1.AgentResult{Node: r.Opts.NodeName, Error: stepErr.Error()}
		log.FromContext(ctx).Error(stepErr, "agent step failed", "migration", m.Name, "step", key)
	}
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	patch := client.MergeFrom(m.DeepCopy())
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	m.Annotations[key] = string(b)
	return r.Client.Patch(ctx, m, patch)
}

func (r *Reconciler) appContainer(ctx context.Context, m *v1.StatefulMigration) (string, error) {
	if len(m.Spec.Containers) > 0 {
		return m.Spec.Containers[0], nil
	}
	pod := &corev1.Pod{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Spec.SourcePod}, pod); err != nil {
		return "", err
	}
	for _, c := range pod.Spec.Containers {
		if c.Name != v1.SidecarContainerName {
			return c.Name, nil
		}
	}
	return "", fmt.Errorf("pod %s has no app container", pod.Name)
}

// kubeletURL is this node's kubelet API, as the node object publishes it.
func (r *Reconciler) kubeletURL(ctx context.Context) (string, error) {
	n := &corev1.Node{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: r.Opts.NodeName}, n); err != nil {
		return "", fmt.Errorf("node %s: %w", r.Opts.NodeName, err)
	}
	var ip string
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			ip = a.Address
		}
	}
	port := n.Status.DaemonEndpoints.KubeletEndpoint.Port
	if ip == "" || port == 0 {
		return "", fmt.Errorf("node %s publishes no InternalIP or kubelet port", n.Name)
	}
	return "https://" + net.JoinHostPort(ip, strconv.Itoa(int(port))), nil
}

// checkpoint asks the kubelet to checkpoint the app container and returns
// the archive's path on this node.
func (r *Reconciler) checkpoint(ctx context.Context, m *v1.StatefulMigration) (string, error) {
	ctr, err := r.appContainer(ctx, m)
	if err != nil {
		return "", err
	}
	base, err := r.kubeletURL(ctx)
	if err != nil {
		return "", err
	}
	timeout := r.Opts.CheckpointTimeout
	if timeout == 0 {
		timeout = time.Minute
	}
	url := fmt.Sprintf("%s/checkpoint/%s/%s/%s?timeout=%d", base, m.Namespace, m.Spec.SourcePod, ctr, int(timeout.Seconds()))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return "", err
	}
	if r.Opts.Token != nil {
		tok, err := r.Opts.Token()
		if err != nil {
			return "", err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := r.Kubelet.Do(req)
	if err != nil {
		return "", fmt.Errorf("kubelet checkpoint API: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("kubelet checkpoint API answered %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var out struct {
		Items []string `json:"items"`
	}
	if err := json.Unmarshal(body, &out); err != nil || len(out.Items) == 0 {
		return "", fmt.Errorf("kubelet checkpoint API: unexpected answer %q", body)
	}
	return out.Items[0], nil
}

// push builds the checkpoint image from the archive, pushes it and removes
// the archive.
func (r *Reconciler) push(ctx context.Context, m *v1.StatefulMigration) (v1.AgentResult, error) {
	var ck v1.AgentResult
	if err := json.Unmarshal([]byte(m.Annotations[v1.AnnotationAgentCheckpoint]), &ck); err != nil || ck.Archive == "" {
		return v1.AgentResult{}, fmt.Errorf("no checkpoint archive recorded")
	}
	repo := m.Spec.CheckpointImageRepository
	if repo == "" {
		repo = r.Opts.Repository
	}
	if repo == "" {
		return v1.AgentResult{}, errors.New("no checkpoint image repository: set spec.checkpointImageRepository or the agent's --checkpoint-image-repository")
	}
	if _, err := checkpoint.ParseRepository(repo); err != nil {
		return v1.AgentResult{}, err
	}
	regs := r.Opts.registries()
	ref, err := regs.Reference(fmt.Sprintf("%s:%s-%s", repo, m.Spec.SourcePod, strings.ToLower(string(m.UID))[:8]))
	if err != nil {
		return v1.AgentResult{}, fmt.Errorf("checkpoint image repository %q: %w", repo, err)
	}
	ctr, err := r.appContainer(ctx, m)
	if err != nil {
		return v1.AgentResult{}, err
	}
	if err := checkArchive(r.Opts.CheckpointDir, ck.Archive, m, ctr); err != nil {
		return v1.AgentResult{}, err
	}
	f, err := openArchive(ck.Archive)
	if err != nil {
		return v1.AgentResult{}, err
	}
	info, err := checkpoint.ReadContainerInfo(f)
	_ = f.Close()
	if err != nil {
		return v1.AgentResult{}, fmt.Errorf("checkpoint archive %s: %w", ck.Archive, err)
	}
	idx, err := checkpoint.Build(func() (io.ReadCloser, error) { return openArchive(ck.Archive) }, checkpoint.Metadata{
		Container: ctr, Pod: m.Spec.SourcePod, Namespace: m.Namespace, Runtime: r.runtime(ctx), Created: time.Now(),
		BaseImage: info.BaseImage, User: info.User, WorkingDir: info.WorkingDir,
	})
	if err != nil {
		return v1.AgentResult{}, err
	}
	opts := append([]remote.Option{remote.WithAuthFromKeychain(checkpoint.Keychain), regs.Transport(remote.DefaultTransport)}, r.Remote...)
	digest, err := checkpoint.Push(ctx, ref, idx, opts...)
	if err != nil {
		return v1.AgentResult{}, err
	}
	var size int64
	if im, err := idx.IndexManifest(); err == nil && len(im.Manifests) == 1 {
		if img, err := idx.Image(im.Manifests[0].Digest); err == nil {
			if layers, err := img.Layers(); err == nil && len(layers) == 1 {
				size, _ = layers[0].Size()
			}
		}
	}
	if err := os.Remove(ck.Archive); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.FromContext(ctx).Error(err, "removing the checkpoint archive", "archive", ck.Archive)
	}
	return v1.AgentResult{Image: digest.String(), SizeBytes: size}, nil
}

// runtime is the node's container runtime as it reports itself.
func (r *Reconciler) runtime(ctx context.Context) string {
	n := &corev1.Node{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: r.Opts.NodeName}, n); err != nil {
		return ""
	}
	return n.Status.NodeInfo.ContainerRuntimeVersion
}

// cleanup removes an archive a finished migration left (a failure between
// checkpoint and push): Kubernetes never collects them.
func (r *Reconciler) cleanup(ctx context.Context, m *v1.StatefulMigration) {
	var ck v1.AgentResult
	if json.Unmarshal([]byte(m.Annotations[v1.AnnotationAgentCheckpoint]), &ck) != nil || ck.Archive == "" {
		return
	}
	ctr, err := r.appContainer(ctx, m)
	if err != nil {
		return
	}
	if err := checkArchive(r.Opts.CheckpointDir, ck.Archive, m, ctr); err != nil {
		log.FromContext(ctx).Error(err, "not removing the archive a finished migration names", "migration", m.Name)
		return
	}
	if err := os.Remove(ck.Archive); err == nil {
		log.FromContext(ctx).Info("removed the checkpoint archive of a finished migration", "archive", ck.Archive)
	}
}
