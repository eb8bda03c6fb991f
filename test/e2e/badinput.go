package e2e

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/ms2m/ms2m/internal/example/deploy"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/migrationclient"
)

// BadInputInput configures BadInputSpec.
type BadInputInput struct {
	Cluster *Cluster
}

// BadInputSpec: every migration that cannot be done fails with a reason
// naming what is wrong, and the source is left untouched and serving.
func BadInputSpec(in BadInputInput) features.Feature {
	return features.New("migrations that cannot be done fail clearly and touch nothing").
		Assess("each bad request fails with its reason; the source keeps serving", func(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
			c := in.Cluster
			if len(c.Brokers) == 0 {
				t.Skip("no Kafka broker for this cluster (set E2E_BROKERS)")
			}
			ns := c.Namespace(t, "badinput")
			e := deploy.Example{Name: "orders", Brokers: c.Brokers, Topic: ns + "-orders", Rate: 20, Count: 10}
			d := deployConsumer(ctx, t, c, ns, e)
			plain := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "plain", Labels: map[string]string{"app": "plain"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{ConsumerContainer()}}}
			if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, plain, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			assertServing(ctx, t, c, ns, "app=plain", 1)
			nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var cordoned, cannotRestore string
			for _, n := range nodes.Items {
				switch {
				case n.Labels[v1.LabelCheckpointRestore] != "true" && cannotRestore == "":
					cannotRestore = n.Name
				case n.Name != d.Pod.Spec.NodeName && cordoned == "":
					cordoned = n.Name
				}
			}
			if out, err := c.Kubectl(ctx, "cordon", cordoned); err != nil {
				t.Fatalf("cordon: %v %s", err, out)
			}
			t.Cleanup(func() { _, _ = c.Kubectl(context.Background(), "uncordon", cordoned) })

			cases := []struct {
				name   string
				spec   v1.StatefulMigrationSpec
				reason string
			}{
				{"pod does not exist", v1.StatefulMigrationSpec{SourcePod: "no-such-pod"}, v1.ReasonSourcePodNotFound},
				{"pod not migratable", v1.StatefulMigrationSpec{SourcePod: "plain"}, v1.ReasonSourceNotMigratable},
				{"target is the source node", v1.StatefulMigrationSpec{SourcePod: d.Pod.Name, TargetNode: d.Pod.Spec.NodeName}, v1.ReasonTargetIsSource},
				{"unknown target node", v1.StatefulMigrationSpec{SourcePod: d.Pod.Name, TargetNode: "no-such-node"}, v1.ReasonTargetNodeNotFound},
				{"cordoned target node", v1.StatefulMigrationSpec{SourcePod: d.Pod.Name, TargetNode: cordoned}, v1.ReasonTargetUnschedulable},
				{"unreachable brokers", v1.StatefulMigrationSpec{SourcePod: d.Pod.Name,
					MessageQueueConfig: &v1.MessageQueueConfig{Brokers: []v1.BrokerAddress{"127.0.0.1:1"}}}, v1.ReasonBrokerUnreachable},
			}
			if cannotRestore != "" {
				cases = append(cases, struct {
					name   string
					spec   v1.StatefulMigrationSpec
					reason string
				}{"target cannot restore checkpoints", v1.StatefulMigrationSpec{SourcePod: d.Pod.Name, TargetNode: cannotRestore}, v1.ReasonTargetCannotRestore})
			}
			cl := c.CRClient(t)
			for i, tc := range cases {
				m := &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bad-%d", i), Namespace: ns}, Spec: tc.spec}
				if err := cl.Create(ctx, m); err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				got := waitFinished(t, c, cl, m)
				cond := meta.FindStatusCondition(got.Status.Conditions, v1.ConditionReady)
				if got.Status.Phase != v1.PhaseFailed || cond == nil || cond.Reason != tc.reason || got.Status.FailureReason == "" {
					t.Errorf("%s: phase %s, reason %v, message %q; want Failed with %s", tc.name, got.Status.Phase, cond, got.Status.FailureReason, tc.reason)
				} else {
					t.Logf("%s: %s: %s", tc.name, cond.Reason, got.Status.FailureReason)
				}
			}
			// The source was never touched.
			p, err := c.Client.CoreV1().Pods(ns).Get(ctx, d.Pod.Name, metav1.GetOptions{})
			if err != nil || p.UID != d.Pod.UID || !IsReady(p) {
				t.Fatalf("source after the refused migrations: %v ready=%v", err, err == nil && IsReady(p))
			}
			return ctx
		}).Feature()
}

// waitFinished waits for a migration to reach Completed or Failed.
func waitFinished(t *testing.T, c *Cluster, cl client.Client, m *v1.StatefulMigration) *v1.StatefulMigration {
	t.Helper()
	got := &v1.StatefulMigration{}
	c.EventuallyIn(t, m.Namespace, "migration "+m.Name+" finished", func(ctx context.Context) error {
		if err := cl.Get(ctx, client.ObjectKeyFromObject(m), got); err != nil {
			return err
		}
		if !got.Status.Phase.IsTerminal() {
			return fmt.Errorf("phase %q, conditions %+v, annotations %v", got.Status.Phase, got.Status.Conditions, got.Annotations)
		}
		return nil
	})
	return got
}

// CRClient is a controller-runtime client that knows StatefulMigrations.
func (c *Cluster) CRClient(t testing.TB) client.Client {
	t.Helper()
	cfg := rest.CopyConfig(c.Config)
	cfg.QPS, cfg.Burst = 200, 400 // specs poll migrations closely
	cl, err := client.New(cfg, client.Options{Scheme: migrationclient.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}
