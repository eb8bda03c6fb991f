package sandbox

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"
)

type controlPlane struct {
	env   *envtest.Environment
	admin *rest.Config
	dir   string
	procs []*exec.Cmd
	done  []chan struct{}
}

// startControlPlane runs etcd and kube-apiserver through envtest (which
// makes the certificates and users), with all state under Dir.
func startControlPlane(ctx context.Context, opts Options, serviceCIDR string) (*controlPlane, error) {
	// Certificates are made afresh on every start (envtest hands out the
	// CA only when it generates one); etcd's data persists.
	pki := filepath.Join(opts.Dir, "pki")
	if err := os.RemoveAll(pki); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: opts.ControlPlaneDir,
		CRDDirectoryPaths:     opts.CRDDirs,
		ErrorIfCRDPathMissing: len(opts.CRDDirs) > 0,
	}
	if opts.Manager != nil {
		// envtest makes the serving certificate and registers the webhook
		// configurations with a URL to the in-process manager.
		env.WebhookInstallOptions = envtest.WebhookInstallOptions{Paths: []string{opts.WebhookManifests}, LocalServingHost: "127.0.0.1"}
	}
	api := env.ControlPlane.GetAPIServer()
	api.CertDir = pki
	api.Out, api.Err = logFile(opts.Dir, "kube-apiserver")
	// The apiserver would otherwise publish its own endpoint, which it
	// refuses to do for a loopback address.
	api.Configure().Set("endpoint-reconciler-type", "none")
	// Loopback ClusterIPs: the simulated kube-proxy listens on them.
	api.Configure().Set("service-cluster-ip-range", serviceCIDR)
	// envtest turns ServiceAccount admission off; a cluster has it on (pods
	// get their service account and its token volume).
	api.Configure().Disable("disable-admission-plugins")
	etcd := &envtest.Etcd{}
	env.ControlPlane.Etcd = etcd
	etcd.DataDir = filepath.Join(opts.Dir, "etcd")
	etcd.Out, etcd.Err = logFile(opts.Dir, "etcd")
	if _, err := env.Start(); err != nil {
		return nil, fmt.Errorf("sandbox: starting etcd and kube-apiserver (logs in %s): %w", filepath.Join(opts.Dir, "logs"), err)
	}
	cp := &controlPlane{env: env, dir: opts.Dir}
	admin, err := cp.writeKubeconfig("kubeconfig", envtest.User{Name: "sandbox-admin", Groups: []string{"system:masters"}})
	if err != nil {
		cp.stop()
		return nil, err
	}
	cp.admin = admin
	return cp, os.WriteFile(filepath.Join(pki, "ca.crt"), admin.CAData, 0o600)
}

func logFile(dir, name string) (*os.File, *os.File) {
	f, err := os.OpenFile(filepath.Join(dir, "logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil
	}
	return f, f
}

// writeKubeconfig issues a client certificate for user and writes its
// kubeconfig to Dir/name.
func (cp *controlPlane) writeKubeconfig(name string, user envtest.User) (*rest.Config, error) {
	u, err := cp.env.ControlPlane.AddUser(user, nil)
	if err != nil {
		return nil, err
	}
	b, err := u.KubeConfig()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(cp.dir, name), b, 0o600); err != nil {
		return nil, err
	}
	return u.Config(), nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startControllers runs kube-controller-manager and kube-scheduler as
// their own users (the RBAC bootstrap roles apply) and waits until both
// report healthy.
func (cp *controlPlane) startControllers(ctx context.Context, opts Options) error {
	pki := filepath.Join(opts.Dir, "pki")
	if _, err := cp.writeKubeconfig("kube-controller-manager.kubeconfig", envtest.User{Name: "system:kube-controller-manager"}); err != nil {
		return err
	}
	if _, err := cp.writeKubeconfig("kube-scheduler.kubeconfig", envtest.User{Name: "system:kube-scheduler"}); err != nil {
		return err
	}
	kcmPort, err := freePort()
	if err != nil {
		return err
	}
	kcmConfig := filepath.Join(opts.Dir, "kube-controller-manager.kubeconfig")
	if err := cp.run(opts, "kube-controller-manager",
		"--kubeconfig="+kcmConfig,
		// No EndpointSlices: the API server refuses the pods' loopback
		// addresses in them; the simulated kube-proxy reads pods instead.
		"--controllers=*,-nodeipam,-endpoint,-endpointslice,-endpointslicemirroring",
		"--service-account-private-key-file="+filepath.Join(pki, "sa-signer.key"),
		"--root-ca-file="+filepath.Join(pki, "ca.crt"),
		"--use-service-account-credentials=true",
		"--leader-elect=false",
		"--cluster-name=ms2m-sandbox",
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(kcmPort),
	); err != nil {
		return err
	}
	if err := cp.startScheduler(ctx, opts); err != nil {
		return err
	}
	return waitHealthy(ctx, cp, "kube-controller-manager", kcmPort)
}

// startScheduler runs kube-scheduler with opts' extenders and waits until
// it reports healthy.
func (cp *controlPlane) startScheduler(ctx context.Context, opts Options) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	cfg, err := schedulerConfig(opts, filepath.Join(opts.Dir, "kube-scheduler.kubeconfig"))
	if err != nil {
		return err
	}
	if err := cp.run(opts, "kube-scheduler", "--config="+cfg,
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(port)); err != nil {
		return err
	}
	return waitHealthy(ctx, cp, "kube-scheduler", port)
}

// stopProcess stops the control-plane process name and forgets it.
func (cp *controlPlane) stopProcess(name string) {
	for i, p := range cp.procs {
		if filepath.Base(p.Path) != name {
			continue
		}
		_ = syscall.Kill(-p.Process.Pid, syscall.SIGTERM)
		select {
		case <-cp.done[i]:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
			<-cp.done[i]
		}
		cp.procs, cp.done = slices.Delete(cp.procs, i, i+1), slices.Delete(cp.done, i, i+1)
		return
	}
}

// schedulerConfig writes the KubeSchedulerConfiguration.
func schedulerConfig(opts Options, kubeconfig string) (string, error) {
	cfg := map[string]any{
		"apiVersion":       "kubescheduler.config.k8s.io/v1",
		"kind":             "KubeSchedulerConfiguration",
		"clientConnection": map[string]any{"kubeconfig": kubeconfig},
		"leaderElection":   map[string]any{"leaderElect": false},
	}
	if len(opts.SchedulerExtenders) > 0 {
		cfg["extenders"] = opts.SchedulerExtenders
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return "", err
	}
	path := filepath.Join(opts.Dir, "kube-scheduler.yaml")
	return path, os.WriteFile(path, b, 0o600)
}

// run starts a control-plane binary as a child that dies with the sandbox.
func (cp *controlPlane) run(opts Options, name string, args ...string) error {
	out, _ := logFile(opts.Dir, name)
	cmd := exec.Command(filepath.Join(opts.ControlPlaneDir, name), args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("sandbox: starting %s: %w", name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		if out != nil {
			_ = out.Close()
		}
		close(done)
	}()
	cp.procs, cp.done = append(cp.procs, cmd), append(cp.done, done)
	return nil
}

func waitHealthy(ctx context.Context, cp *controlPlane, name string, port int) error {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // self-signed loopback health endpoint
	}}
	url := fmt.Sprintf("https://127.0.0.1:%d/healthz", port)
	var last error
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 90*time.Second, true, func(context.Context) (bool, error) {
		for i, p := range cp.procs {
			if filepath.Base(p.Path) == name {
				select {
				case <-cp.done[i]:
					return false, fmt.Errorf("%s exited", name)
				default:
				}
			}
		}
		resp, err := c.Get(url)
		if err != nil {
			last = err
			return false, nil
		}
		_ = resp.Body.Close()
		last = fmt.Errorf("healthz: %s", resp.Status)
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("sandbox: %s is not healthy (%v; last: %v); its log: %s", name, err, last,
			filepath.Join(cp.dir, "logs", name+".log"))
	}
	return nil
}

// waitNodesReady waits until the node lifecycle controller has seen every
// node Ready and lifted the not-ready taint, so pods can be scheduled.
func (s *Sandbox) waitNodesReady(ctx context.Context) error {
	var pending []string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		nodes, err := s.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		pending = pending[:0]
		for _, n := range nodes.Items {
			for _, t := range n.Spec.Taints {
				if t.Key == corev1.TaintNodeNotReady {
					pending = append(pending, n.Name)
				}
			}
		}
		return len(nodes.Items) >= s.opts.Nodes && len(pending) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("sandbox: nodes still tainted not-ready (%s): is kube-controller-manager running? log: %s",
			strings.Join(pending, ", "), filepath.Join(s.opts.Dir, "logs", "kube-controller-manager.log"))
	}
	return nil
}

func (cp *controlPlane) stop() {
	for _, p := range cp.procs {
		_ = syscall.Kill(-p.Process.Pid, syscall.SIGTERM)
	}
	for i, p := range cp.procs {
		select {
		case <-cp.done[i]:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
			<-cp.done[i]
		}
	}
	if cp.env != nil {
		if err := cp.env.Stop(); err != nil && !errors.Is(err, context.Canceled) {
			_ = err // the processes are gone either way; Reap covers strays
		}
	}
}
