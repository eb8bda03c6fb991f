package e2e

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ms2m/ms2m/internal/example/deploy"
)

// deployExample deploys the example consumer e into ns (its cluster-scoped
// auth-delegator binding removed when the test ends), starts its producer
// and waits until the consumer has applied applied messages.
func deployExample(ctx context.Context, t *testing.T, c *Cluster, ns string, e deploy.Example, applied int64) deploy.Deployed {
	t.Helper()
	d := deployConsumer(ctx, t, c, ns, e)
	if err := deploy.StartProducer(ctx, c.Client, ns, e, t.Logf); err != nil {
		t.Fatal(err)
	}
	if err := deploy.WaitApplied(ctx, d, applied); err != nil {
		t.Fatal(err)
	}
	return d
}

// deployConsumer deploys the example consumer e into ns, its cluster-scoped
// auth-delegator binding removed when the test ends, and returns it Ready.
func deployConsumer(ctx context.Context, t *testing.T, c *Cluster, ns string, e deploy.Example) deploy.Deployed {
	t.Helper()
	t.Cleanup(func() {
		_ = c.Client.RbacV1().ClusterRoleBindings().Delete(context.Background(), e.AuthDelegator(ns).Name, metav1.DeleteOptions{})
	})
	d, err := deploy.DeployConsumer(ctx, c.Client, ns, e, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// verifyZeroLoss waits for e's producer to finish and checks, on the
// consumer serving now (returned), that every one of the e.Count messages
// was processed live exactly once and the state is the fold of the input.
func verifyZeroLoss(ctx context.Context, t *testing.T, c *Cluster, ns string, e deploy.Example) deploy.Deployed {
	t.Helper()
	if err := deploy.WaitProducer(ctx, c.Client, ns, e); err != nil {
		t.Fatal(err)
	}
	after, err := deploy.FindConsumer(ctx, c.Client, ns, e)
	if err != nil {
		t.Fatal(err)
	}
	v, err := deploy.Verify(ctx, e, after.URL(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK() || v.Input != int(e.Count) {
		t.Fatalf("%s: %s (want %d input messages)", e.Name, v, e.Count)
	}
	t.Logf("%s: %s", e.Name, v)
	return after
}
