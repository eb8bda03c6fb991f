package kubelet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ms2m/ms2m/pkg/simcriu"
)

// container is one container of a pod as the simulated runtime runs it.
// Its fields are guarded by the pod runtime's mutex.
type container struct {
	spec corev1.Container
	st   ctrState

	processless bool
	binary      string
	argv        []string // the command line as in the image, for checkpoints
	env         []string
	hookSocket  string
	cgroup      simcriu.Cgroup // while it runs
	restoreFrom string         // memory image of a restored container
	baseImage   string         // the image a checkpoint image was taken from
	uid, gid    uint32         // the user the process runs as (see runAs)

	cmd         *exec.Cmd
	done        chan struct{}
	probeCancel context.CancelFunc
	nextStart   time.Time
}

const restartBackoffMax = 30 * time.Second

// backoff is the restart delay: 1 s doubling to 30 s (the kubelet's 10 s to
// 5 min, shortened for the sandbox).
func backoff(restarts int32) time.Duration {
	d := time.Second << min(restarts, 5)
	return min(d, restartBackoffMax)
}

// projectBinary maps a project image and its command to a local binary.
// ok is false for any other image: the container runs without a process.
func (rt *Runtime) projectBinary(image string, argv []string) (string, bool, error) {
	ref, err := name.ParseReference(image, name.WeakValidation)
	if err != nil {
		return "", false, fmt.Errorf("image %q: %w", image, err)
	}
	repo := ref.Context().Name()
	if !slices.ContainsFunc(rt.ProjectImages, func(p string) bool {
		pr, err := name.NewRepository(p, name.WeakValidation)
		return err == nil && pr.Name() == repo
	}) {
		return "", false, nil
	}
	if len(argv) == 0 {
		return "", true, fmt.Errorf("image %s holds several binaries: set the container's command (e.g. /ms2m/ms2m-replay)", image)
	}
	bin := filepath.Join(rt.BinDir, filepath.Base(argv[0]))
	if _, err := os.Stat(bin); err != nil {
		return "", true, fmt.Errorf("image %s command %s: no %s (build the binaries with `make build`, or set the sandbox's --bin-dir)", image, argv[0], bin)
	}
	return bin, true, nil
}

// fromRegistry reports whether image lives in the sandbox registry, where
// checkpoint images are pushed.
func (rt *Runtime) fromRegistry(image string) (name.Reference, bool) {
	if rt.Registry == "" {
		return nil, false
	}
	ref, err := name.ParseReference(image, name.WeakValidation)
	if err != nil || ref.Context().RegistryStr() != rt.Registry {
		return nil, false
	}
	return ref, true
}

// restored is what a checkpoint image says about the container to start.
type restored struct {
	imageID   string
	baseImage string
	argv      []string
	env       []string
	binary    string // "" for a container that ran without a process
	memory    string // the memory image written for the process
	// connectedTCP are the connected sockets the checkpoint holds.
	connectedTCP []string
	// user is the checkpoint image config's User.
	user string
}

// restore pulls an image from the sandbox registry with keys and, for a
// checkpoint image, prepares the start from it: the
// binary and command line recorded in the archive, the memory image written
// where the process reads it (SIMULATED CRIU restore). ok is false for an
// ordinary image.
//
// It reads the image as the node's runtime does, not through the
// project's pkg/checkpoint:
//   - CRI-O (server/container_create.go and container_restore.go): the
//     image for the node's platform is a checkpoint when its manifest
//     carries io.kubernetes.cri-o.annotations.checkpoint.name; spec.dump
//     must carry the CRI-O annotations CRI-O rebuilds the container from
//     (io.kubernetes.cri-o.Annotations, .Labels, .Metadata, as JSON).
//   - containerd (2.1-2.3, restore in CreateContainer): the image is a
//     checkpoint when its index carries org.criu.checkpoint.container.name;
//     the archive must hold status.dump, which containerd writes and CRI-O
//     does not.
//
// For both the one layer is the archive and config.dump names the base
// image (rootfsImageName).
func (rt *Runtime) restore(ctx context.Context, ref name.Reference, dir, ctrName, flavour string, keys authn.Keychain) (r restored, ok bool, err error) {
	opts := []remote.Option{remote.WithContext(ctx), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}), remote.WithAuthFromKeychain(keys)}
	if flavour == FlavourContainerd {
		desc, err := remote.Get(ref, opts...)
		if err != nil {
			return r, false, fmt.Errorf("pulling %s: %w", ref, err)
		}
		if !desc.MediaType.IsIndex() {
			return r, false, nil // containerd reads the checkpoint annotations on an index
		}
		idx, err := desc.ImageIndex()
		if err != nil {
			return r, false, err
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return r, false, err
		}
		if im.Annotations[containerdCheckpointAnnotation] == "" {
			return r, false, nil // an ordinary image
		}
	}
	img, err := remote.Image(ref, opts...)
	if err != nil {
		return r, false, fmt.Errorf("pulling %s: %w", ref, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return r, false, fmt.Errorf("pulling %s: %w", ref, err)
	}
	if flavour != FlavourContainerd && m.Annotations[crioCheckpointAnnotation] == "" {
		return r, false, nil // an ordinary image
	}
	layers, err := img.Layers()
	if err != nil {
		return r, true, err
	}
	if len(layers) != 1 {
		return r, true, fmt.Errorf("checkpoint image %s has %d layers: CRI-O restores from one", ref, len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		return r, true, err
	}
	defer func() { _ = rc.Close() }()
	a, err := simcriu.ReadArchive(rc)
	if err != nil {
		return r, true, fmt.Errorf("checkpoint image %s: %w", ref, err)
	}
	switch flavour {
	case FlavourContainerd:
		if a.Status == nil {
			return r, true, fmt.Errorf("checkpoint image %s: containerd: no %s in the checkpoint (an archive CRI-O wrote?)", ref, simcriu.FileStatus)
		}
	default:
		for _, k := range []string{crioAnnotations, crioLabels, crioMetadata} {
			var v any
			if err := json.Unmarshal([]byte(a.Spec.Annotations[k]), &v); err != nil {
				return r, true, fmt.Errorf("checkpoint image %s: CRI-O: failed to read %q from spec.dump: %w", ref, k, err)
			}
		}
	}
	if a.Config.RootfsImageName == "" {
		return r, true, fmt.Errorf("checkpoint image %s: config.dump names no base image (rootfsImageName)", ref)
	}
	digest, err := img.Digest()
	if err != nil {
		return r, true, err
	}
	r = restored{imageID: ref.Context().Digest(digest.String()).String(), baseImage: a.Config.RootfsImageName,
		argv: a.Spec.Process.Args, env: a.Spec.Process.Env, connectedTCP: a.ConnectedTCP}
	// The image config, as the kubelet reads it (ImageStatus) to verify
	// runAsNonRoot.
	cf, err := img.ConfigFile()
	if err != nil {
		return r, true, fmt.Errorf("checkpoint image %s config: %w", ref, err)
	}
	r.user = cf.Config.User
	bin, project, err := rt.projectBinary(r.baseImage, r.argv)
	if err != nil || !project {
		return r, true, err
	}
	r.binary, r.memory = bin, filepath.Join(dir, ctrName+".pages.img")
	return r, true, os.WriteFile(r.memory, a.Memory, 0o600)
}

// startProcess runs c's binary; onExit runs when it ends.
func (c *container) startProcess(dir string, baseEnv []string, onExit func(code int)) error {
	env := append(slices.Clone(baseEnv), c.env...)
	env = append(env, simcriu.EnvHook+"="+c.hookSocket)
	if c.restoreFrom != "" {
		env = append(env, simcriu.EnvRestore+"="+c.restoreFrom)
	}
	logf, err := os.OpenFile(filepath.Join(dir, c.spec.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.binary, c.argv[1:]...)
	cmd.Env, cmd.Dir, cmd.Stdout, cmd.Stderr = env, dir, logf, logf
	// Own process group (so the whole tree can be signalled), and killed
	// with the sandbox if the sandbox dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return err
	}
	c.cmd, c.done = cmd, make(chan struct{})
	done := c.done
	go func() {
		err := cmd.Wait()
		_ = logf.Close()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
			if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				code = 128 + int(ws.Signal())
			}
		} else if err != nil {
			code = 1
		}
		close(done)
		onExit(code)
	}()
	return nil
}

// signal sends sig to the container's process group.
func (c *container) signal(sig syscall.Signal) {
	if c.cmd != nil && c.cmd.Process != nil {
		_ = syscall.Kill(-c.cmd.Process.Pid, sig)
	}
}

// probe runs the container's readiness probe against the pod's address
// until ctx ends, calling report on every change.
func probe(ctx context.Context, p *corev1.Probe, ports []corev1.ContainerPort, podIP string, report func(bool)) {
	period := time.Duration(max(p.PeriodSeconds, 1)) * time.Second
	success, failure := max(p.SuccessThreshold, 1), max(p.FailureThreshold, 1)
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Duration(p.InitialDelaySeconds) * time.Second):
	}
	ready, okRun, failRun := false, int32(0), int32(0)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		ok := probeOnce(ctx, p, ports, podIP, timeout)
		if ok {
			okRun, failRun = okRun+1, 0
		} else {
			okRun, failRun = 0, failRun+1
		}
		switch {
		case !ready && okRun >= success:
			ready = true
			report(true)
		case ready && failRun >= failure:
			ready = false
			report(false)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func resolvePort(port intstr.IntOrString, ports []corev1.ContainerPort) string {
	if port.Type == intstr.Int {
		return strconv.Itoa(port.IntValue())
	}
	for _, p := range ports {
		if p.Name == port.StrVal {
			return strconv.Itoa(int(p.ContainerPort))
		}
	}
	return port.StrVal
}

// probeClient opens a connection per probe and closes it, as the kubelet's
// HTTP prober does (pkg/probe/http: DisableKeepAlives): a kept-alive probe
// connection would be a connected socket in every checkpoint.
var probeClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

func probeOnce(ctx context.Context, p *corev1.Probe, ports []corev1.ContainerPort, podIP string, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case p.HTTPGet != nil:
		host := p.HTTPGet.Host
		if host == "" {
			host = podIP
		}
		scheme := "http"
		if p.HTTPGet.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		url := scheme + "://" + net.JoinHostPort(host, resolvePort(p.HTTPGet.Port, ports)) + p.HTTPGet.Path
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false
		}
		resp, err := probeClient.Do(req)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode >= 200 && resp.StatusCode < 400
	case p.TCPSocket != nil:
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort(podIP, resolvePort(p.TCPSocket.Port, ports)))
		if err != nil {
			return false
		}
		_ = conn.Close()
		return true
	}
	return true // exec and gRPC probes are not simulated: treated as passing
}
