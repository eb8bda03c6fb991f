package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/internal/testenv"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// These tests install the generated CRD into a real kube-apiserver and check
// what a user sees at `kubectl apply`: malformed specs are refused with an
// error naming the field, valid ones are stored with their defaults.

var env *testenv.Env

func TestMain(m *testing.M) {
	os.Exit(testenv.RunMain(m, &env, testenv.Options{}))
}

func validSpec() v1.StatefulMigrationSpec {
	return v1.StatefulMigrationSpec{
		SourcePod:  "consumer-0",
		TargetNode: "node-b.example",
		Containers: []string{"app"},
		MessageQueueConfig: &v1.MessageQueueConfig{
			Brokers:       []v1.BrokerAddress{"kafka-0.kafka:9092", "10.0.0.7:19092"},
			Topic:         "orders.v1",
			ConsumerGroup: "order-aggregator",
		},
		CheckpointImageRepository: "registry.example.com:5000/team/checkpoints",
		Strategy:                  v1.StrategyShadowPod,
		Timeouts:                  &v1.Timeouts{CheckpointSeconds: ptr.To[int32](30)},
	}
}

func newMigration(name string, mutate func(*v1.StatefulMigrationSpec)) *v1.StatefulMigration {
	spec := validSpec()
	if mutate != nil {
		mutate(&spec)
	}
	return &v1.StatefulMigration{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec:       spec,
	}
}

func TestValidSpecRoundTripsWithDefaults(t *testing.T) {
	ctx := context.Background()
	in := newMigration("valid", func(s *v1.StatefulMigrationSpec) { s.Strategy = "" })
	if err := env.Client.Create(ctx, in); err != nil {
		t.Fatalf("valid StatefulMigration refused: %v", err)
	}
	out := &v1.StatefulMigration{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(in), out); err != nil {
		t.Fatal(err)
	}
	if out.Spec.SourcePod != "consumer-0" || out.Spec.TargetNode != "node-b.example" ||
		len(out.Spec.MessageQueueConfig.Brokers) != 2 || out.Spec.MessageQueueConfig.Topic != "orders.v1" {
		t.Errorf("spec did not round-trip: %+v", out.Spec)
	}
	if out.Spec.Strategy != v1.StrategyAuto {
		t.Errorf("strategy default = %q, want Auto", out.Spec.Strategy)
	}
	// No schema default: unset, the manager's --default-replay-cutoff
	// applies (a schema default would make that flag meaningless).
	if out.Spec.ReplayCutoffSeconds != nil {
		t.Errorf("replayCutoffSeconds defaulted to %d by the schema; want unset", *out.Spec.ReplayCutoffSeconds)
	}
	if got := ptr.Deref(out.Spec.DowntimeBudgetMilliseconds, 0); got != 100 {
		t.Errorf("downtimeBudgetMilliseconds default = %d, want 100", got)
	}

	minimal := &v1.StatefulMigration{
		ObjectMeta: metav1.ObjectMeta{Name: "minimal", Namespace: "default"},
		Spec:       v1.StatefulMigrationSpec{SourcePod: "p"},
	}
	if err := env.Client.Create(ctx, minimal); err != nil {
		t.Fatalf("a spec with only sourcePod must be accepted (everything else defaults): %v", err)
	}
}

func TestMalformedSpecIsRejectedNamingTheField(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*v1.StatefulMigrationSpec)
		field  string
		msg    string
	}{
		{"empty source pod", func(s *v1.StatefulMigrationSpec) { s.SourcePod = "" }, "spec.sourcePod", ""},
		{"uppercase source pod", func(s *v1.StatefulMigrationSpec) { s.SourcePod = "Consumer_0" }, "spec.sourcePod", "valid pod name"},
		{"source pod too long", func(s *v1.StatefulMigrationSpec) { s.SourcePod = strings.Repeat("a", 254) }, "spec.sourcePod", ""},
		{"invalid target node", func(s *v1.StatefulMigrationSpec) { s.TargetNode = "node/b" }, "spec.targetNode", "valid node name"},
		{"negative cutoff", func(s *v1.StatefulMigrationSpec) { s.ReplayCutoffSeconds = ptr.To[int32](-5) }, "spec.replayCutoffSeconds", ""},
		{"zero cutoff", func(s *v1.StatefulMigrationSpec) { s.ReplayCutoffSeconds = ptr.To[int32](0) }, "spec.replayCutoffSeconds", ""},
		{"absurd cutoff", func(s *v1.StatefulMigrationSpec) { s.ReplayCutoffSeconds = ptr.To[int32](86400 * 7) }, "spec.replayCutoffSeconds", ""},
		{"zero downtime budget", func(s *v1.StatefulMigrationSpec) { s.DowntimeBudgetMilliseconds = ptr.To[int32](0) }, "spec.downtimeBudgetMilliseconds", ""},
		{"broker without port", func(s *v1.StatefulMigrationSpec) { s.MessageQueueConfig.Brokers = []v1.BrokerAddress{"kafka-0.kafka"} }, "spec.messageQueueConfig.brokers[0]", "host:port"},
		{"broker port out of range", func(s *v1.StatefulMigrationSpec) {
			s.MessageQueueConfig.Brokers = []v1.BrokerAddress{"kafka:9092", "kafka:70000"}
		}, "spec.messageQueueConfig.brokers[1]", "between 1 and 65535"},
		{"broker with scheme", func(s *v1.StatefulMigrationSpec) { s.MessageQueueConfig.Brokers = []v1.BrokerAddress{"kafka://k:9092"} }, "spec.messageQueueConfig.brokers[0]", "host:port"},
		{"too many brokers", func(s *v1.StatefulMigrationSpec) {
			s.MessageQueueConfig.Brokers = make([]v1.BrokerAddress, 33)
			for i := range s.MessageQueueConfig.Brokers {
				s.MessageQueueConfig.Brokers[i] = v1.BrokerAddress(fmt.Sprintf("kafka-%d:9092", i))
			}
		}, "spec.messageQueueConfig.brokers", "must have at most 32 items"},
		{"invalid topic", func(s *v1.StatefulMigrationSpec) { s.MessageQueueConfig.Topic = "orders v1" }, "spec.messageQueueConfig.topic", ""},
		{"topic too long", func(s *v1.StatefulMigrationSpec) { s.MessageQueueConfig.Topic = strings.Repeat("t", 250) }, "spec.messageQueueConfig.topic", ""},
		{"invalid consumer group", func(s *v1.StatefulMigrationSpec) { s.MessageQueueConfig.ConsumerGroup = "grp/1" }, "spec.messageQueueConfig.consumerGroup", ""},
		{"unknown strategy", func(s *v1.StatefulMigrationSpec) { s.Strategy = "Teleport" }, "spec.strategy", "Unsupported value"},
		{"sidecar listed as container", func(s *v1.StatefulMigrationSpec) { s.Containers = []string{"app", "ms2m-replay"} }, "spec.containers", "ms2m-replay"},
		{"invalid container name", func(s *v1.StatefulMigrationSpec) { s.Containers = []string{"App"} }, "spec.containers[0]", ""},
		{"duplicate containers", func(s *v1.StatefulMigrationSpec) { s.Containers = []string{"app", "app"} }, "spec.containers[1]", "Duplicate"},
		{"repository with tag", func(s *v1.StatefulMigrationSpec) { s.CheckpointImageRepository = "registry.example.com/ckpt:latest" }, "spec.checkpointImageRepository", "without tag or digest"},
		{"repository without path", func(s *v1.StatefulMigrationSpec) { s.CheckpointImageRepository = "registry.example.com" }, "spec.checkpointImageRepository", "image repository"},
		{"repository without a registry host (Docker Hub)", func(s *v1.StatefulMigrationSpec) { s.CheckpointImageRepository = "team/checkpoints" }, "spec.checkpointImageRepository", "Docker Hub"},
		{"zero checkpoint timeout", func(s *v1.StatefulMigrationSpec) { s.Timeouts.CheckpointSeconds = ptr.To[int32](0) }, "spec.timeouts.checkpointSeconds", ""},
		{"absurd finalize timeout", func(s *v1.StatefulMigrationSpec) { s.Timeouts.FinalizeSeconds = ptr.To[int32](100000) }, "spec.timeouts.finalizeSeconds", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := newMigration("bad-"+strings.ToLower(strings.ReplaceAll(tc.name, " ", "-")), tc.mutate)
			err := env.Client.Create(context.Background(), obj)
			expectInvalid(t, err, tc.field, tc.msg)
		})
	}
}

func TestSpecIsImmutable(t *testing.T) {
	ctx := context.Background()
	m := newMigration("immutable", nil)
	if err := env.Client.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	m.Spec.TargetNode = "node-c"
	expectInvalid(t, env.Client.Update(ctx, m), "spec", "spec is immutable")

	// Metadata stays editable: users label and annotate migrations.
	fresh := &v1.StatefulMigration{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(m), fresh); err != nil {
		t.Fatal(err)
	}
	fresh.Labels = map[string]string{"team": "payments"}
	if err := env.Client.Update(ctx, fresh); err != nil {
		t.Fatalf("changing labels must be allowed: %v", err)
	}
}

func TestStatusIsASubresource(t *testing.T) {
	ctx := context.Background()
	m := newMigration("status", nil)
	if err := env.Client.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	// A user's update of the main resource cannot forge a status.
	m.Status.Phase = v1.PhaseCompleted
	if err := env.Client.Update(ctx, m); err != nil {
		t.Fatal(err)
	}
	got := &v1.StatefulMigration{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(m), got); err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase != "" {
		t.Fatalf("status.phase changed through the main resource: %q", got.Status.Phase)
	}
	// Through the status subresource it sticks, and a checkpoint image that
	// is not pinned by digest is refused.
	got.Status.Phase = v1.PhaseReplaying
	got.Status.CheckpointImage = "registry.example.com/ckpt:consumer-0"
	expectInvalid(t, env.Client.Status().Update(ctx, got), "status.checkpointImage", "")
	got.Status.CheckpointImage = "registry.example.com/ckpt@sha256:" + strings.Repeat("ab", 32)
	if err := env.Client.Status().Update(ctx, got); err != nil {
		t.Fatalf("status update refused: %v", err)
	}
}

// TestKubectlShowsPrinterColumns runs the machine's real kubectl against the
// API server: the short name resolves and the columns a user watches with
// `kubectl get smig -w` are there.
func TestKubectlShowsPrinterColumns(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatalf("kubectl not found on PATH: %v", err)
	}
	ctx := context.Background()
	m := newMigration("columns", nil)
	if err := env.Client.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	m.Status = v1.StatefulMigrationStatus{Phase: v1.PhaseReplaying, SourceNode: "node-a", TargetNode: "node-b"}
	if err := env.Client.Status().Update(ctx, m); err != nil {
		t.Fatal(err)
	}
	kubeconfig := env.KubeconfigFile(t)
	out, err := exec.Command(kubectl, "--kubeconfig", kubeconfig, "get", "smig", "columns", "-n", "default").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl get smig: %v\n%s", err, out)
	}
	header := strings.Fields(strings.SplitN(string(out), "\n", 2)[0])
	want := []string{"NAME", "PHASE", "SOURCE", "POD", "SOURCE", "NODE", "TARGET", "NODE", "DOWNTIME", "AGE"}
	if strings.Join(header, " ") != strings.Join(want, " ") {
		t.Errorf("kubectl header = %v, want %v", header, want)
	}
	for _, v := range []string{"columns", "Replaying", "consumer-0", "node-a", "node-b"} {
		if !strings.Contains(string(out), v) {
			t.Errorf("kubectl output lacks %q:\n%s", v, out)
		}
	}
}

func expectInvalid(t *testing.T, err error, field, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want an Invalid error naming %s", field)
	}
	if !apierrors.IsInvalid(err) {
		t.Fatalf("error is %v; want Invalid", err)
	}
	var causes []string
	found := false
	if st, ok := err.(apierrors.APIStatus); ok && st.Status().Details != nil {
		for _, c := range st.Status().Details.Causes {
			causes = append(causes, c.Field+": "+c.Message)
			if c.Field == field && strings.Contains(c.Message, msg) {
				found = true
			}
		}
	}
	if !found {
		t.Fatalf("no cause for field %s containing %q; causes: %v\nerror: %v", field, msg, causes, err)
	}
}
