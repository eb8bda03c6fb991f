// Package testenv starts a real kube-apiserver and etcd (from the cache that
// hack/build-control-plane.sh fills) with the ms2m CRDs installed, for the
// integration tests of every package. There is no fake API server here: what
// the tests see is what a cluster does. It is internal because only the
// module's tests use it, and it leaves client-go's global scheme alone: a
// test that needs StatefulMigrations uses Env.Scheme.
package testenv

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ms2m/ms2m/pkg/migrationclient"
)

// Env is a running control plane.
type Env struct {
	Config *rest.Config
	// Scheme knows the core types and StatefulMigrations; Client uses it,
	// and so must the managers and caches a test starts on Config.
	Scheme *k8sruntime.Scheme
	Client client.Client
	env    *envtest.Environment
}

// Options tune the control plane.
type Options struct {
	// WebhookInstallOptions are passed to envtest so webhooks are
	// registered with the real API server.
	WebhookInstallOptions envtest.WebhookInstallOptions
	// ServiceClusterIPRange replaces the API server's service range (the
	// sandbox's simulated kube-proxy serves only loopback ClusterIPs).
	ServiceClusterIPRange string
}

// RepoRoot is the module's root directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// AssetsDir returns the directory holding kube-apiserver and etcd. A missing
// control plane is a setup error, reported as a failure (never a skip) with
// the command that fixes it.
func AssetsDir(tb testing.TB) string {
	tb.Helper()
	dir, err := assetsDir()
	if err != nil {
		tb.Fatal(err)
	}
	return dir
}

func assetsDir() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		return "", errors.New("KUBEBUILDER_ASSETS is not set: run the tests with `make test`, " +
			"or export KUBEBUILDER_ASSETS=$(hack/build-control-plane.sh)")
	}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("KUBEBUILDER_ASSETS=%s has no %s: run hack/build-control-plane.sh", dir, b)
		}
	}
	return dir, nil
}

// RunBenchmarksMain is RunMain for packages that hold only benchmarks:
// without -test.bench (`make test`) there is nothing to run and no control
// plane is started.
func RunBenchmarksMain(m *testing.M, env **Env, opts Options) int {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		return m.Run()
	}
	return RunMain(m, env, opts)
}

// RunMain is for TestMain: it starts one control plane for all the tests of
// a package, stores it in *env, runs each hook (servers the tests need, such
// as a webhook server), runs the tests and stops everything.
func RunMain(m *testing.M, env **Env, opts Options, hooks ...func(*Env) (stop func(), err error)) int {
	// A fuzzing worker runs only the fuzz target, which needs no cluster:
	// starting one in each worker would make `go test -fuzz` crawl.
	flag.Parse()
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		return m.Run()
	}
	assets, err := assetsDir()
	if err == nil {
		*env, err = start(assets, opts)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting kube-apiserver and etcd: %v\n", err)
		return 1
	}
	defer func() { _ = (*env).Stop() }()
	for _, hook := range hooks {
		stop, err := hook(*env)
		if err != nil {
			fmt.Fprintf(os.Stderr, "test setup: %v\n", err)
			return 1
		}
		defer stop()
	}
	return m.Run()
}

// KubeconfigFile writes a cluster-admin kubeconfig for the real kubectl and
// returns its path.
func (e *Env) KubeconfigFile(tb testing.TB) string {
	tb.Helper()
	user, err := e.env.ControlPlane.AddUser(envtest.User{Name: "ms2m-test-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	data, err := user.KubeConfig()
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// Start runs a control plane for the duration of the test (or of TestMain,
// with tb from a throw-away testing.T) and stops it in Cleanup.
func Start(tb testing.TB, opts Options) *Env {
	tb.Helper()
	e, err := start(AssetsDir(tb), opts)
	if err != nil {
		tb.Fatalf("starting kube-apiserver and etcd: %v", err)
	}
	tb.Cleanup(func() { _ = e.Stop() })
	return e
}

func start(assets string, opts Options) (*Env, error) {
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "charts", "ms2m", "crds")},
		ErrorIfCRDPathMissing: true,
		WebhookInstallOptions: opts.WebhookInstallOptions,
	}
	// The apiserver would otherwise try to publish its own endpoint, which
	// it refuses to do for a loopback address.
	env.ControlPlane.GetAPIServer().Configure().Set("endpoint-reconciler-type", "none")
	if opts.ServiceClusterIPRange != "" {
		env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", opts.ServiceClusterIPRange)
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, err
	}
	s := migrationclient.NewScheme()
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	return &Env{Config: cfg, Scheme: s, Client: c, env: env}, nil
}

// Stop stops the control plane.
func (e *Env) Stop() error { return e.env.Stop() }

// Webhook returns the install options envtest needs to serve webhooks.
func (e *Env) Webhook() *envtest.WebhookInstallOptions { return &e.env.WebhookInstallOptions }

// FreeAddr returns a 127.0.0.1 address with a port free at the time of the
// call, for servers a test starts.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}
