package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"testing"

	"k8s.io/klog/v2"
	"sigs.k8s.io/e2e-framework/pkg/env"
	"sigs.k8s.io/e2e-framework/pkg/envconf"

	"github.com/ms2m/ms2m/pkg/sandbox"
)

var (
	testenv env.Environment
	cluster = &Cluster{}
)

func TestMain(m *testing.M) {
	sandbox.RunManagerChild() // the restart spec's manager is this binary started again
	// e2e-framework routes controller-runtime's log to klog; the in-process
	// manager's logs would drown the test output (E2E_SANDBOX_LOG=1 shows
	// the sandbox's own).
	if os.Getenv("E2E_SANDBOX_LOG") == "" {
		klog.LogToStderr(false)
		klog.SetOutput(io.Discard)
	}
	work, err := os.MkdirTemp("", "ms2m-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := Setup(context.Background(), cluster, work); err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		os.Exit(1)
	}
	testenv = env.NewWithConfig(cluster.EnvConfig())
	testenv.Finish(func(ctx context.Context, _ *envconf.Config) (context.Context, error) {
		cluster.Teardown()
		return ctx, nil
	})
	code := testenv.Run(m)
	if code == 0 {
		_ = os.RemoveAll(work)
	} else {
		fmt.Fprintln(os.Stderr, "e2e: sandbox state and logs kept in", work)
	}
	os.Exit(code)
}
