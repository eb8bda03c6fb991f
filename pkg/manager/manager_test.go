package manager

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ms2m/ms2m/internal/expect"
	"github.com/ms2m/ms2m/internal/testenv"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/scheduler"
)

func TestValidateNamesTheFlag(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Options)
		flag   string
	}{
		{"no parallel migrations", func(o *Options) { o.MaxParallelMigrations = 0 }, "--max-parallel-migrations"},
		{"no outbound migrations", func(o *Options) { o.MaxOutboundPerNode = -1 }, "--max-outbound-migrations-per-node"},
		{"per-namespace limit above the cluster's", func(o *Options) { o.MaxParallelPerNamespace = o.MaxParallelMigrations + 1 }, "--max-parallel-migrations-per-namespace"},
		{"repository without a registry host", func(o *Options) { o.CheckpointImageRepository = "team/checkpoints" }, "--checkpoint-image-repository"},
		{"no workers", func(o *Options) { o.MigrationWorkers = 0 }, "--migration-workers"},
		{"unknown image retention", func(o *Options) { o.CheckpointImageRetention = "forever" }, "--checkpoint-image-retention"},
		{"no image deletion wait", func(o *Options) { o.CheckpointImageDeletionTimeout = 0 }, "--checkpoint-image-deletion-timeout"},
		{"no disruption-budget wait", func(o *Options) { o.DisruptionBudgetTimeout = 0 }, "--disruption-budget-timeout"},
		{"sub-second cutoff", func(o *Options) { o.DefaultReplayCutoff = time.Millisecond }, "--default-replay-cutoff"},
		{"webhook port out of range", func(o *Options) { o.WebhookPort = 70000 }, "--webhook-port"},
		{"no sidecar image", func(o *Options) { o.Sidecar.Image = "" }, "--sidecar-image"},
		{"extender address without port", func(o *Options) { o.SchedulerExtender.BindAddress = "localhost" }, "--scheduler-extender-bind-address"},
		{"extender cert without key", func(o *Options) {
			o.SchedulerExtender.BindAddress, o.SchedulerExtender.CertFile = ":8888", "tls.crt"
		}, "--scheduler-extender-key-file"},
	}
	if err := DefaultOptions().Validate(); err != nil {
		t.Fatalf("defaults must be valid: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := DefaultOptions()
			tc.mutate(&o)
			err := o.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.flag) {
				t.Fatalf("Validate() = %v; want an error naming %s", err, tc.flag)
			}
		})
	}
}

// Every controller flag reaches the migration controller (the replay
// cutoff once did not).
func TestFlagsReachTheController(t *testing.T) {
	fs := flag.NewFlagSet("ms2m-manager", flag.ContinueOnError)
	o := DefaultOptions()
	o.BindFlags(fs)
	if err := fs.Parse([]string{"--default-replay-cutoff=45s", "--max-parallel-migrations=7", "--max-outbound-migrations-per-node=3",
		"--checkpoint-image-repository=registry.example.com/ckpt", "--max-parallel-migrations-per-namespace=2", "--migration-workers=3",
		"--disruption-budget-timeout=90s"}); err != nil {
		t.Fatal(err)
	}
	got := controllerOptions(o)
	if got.DefaultReplayCutoff != 45*time.Second || got.MaxParallel != 7 || got.MaxOutboundPerNode != 3 || got.DefaultRepository != "registry.example.com/ckpt" ||
		got.MaxParallelPerNamespace != 2 || got.Workers != 3 || got.DisruptionBudgetTimeout != 90*time.Second {
		t.Fatalf("controller options %+v", got)
	}
}

// A manager started with Args has every option it was given, the
// defaults changed included (the sandbox starts one as a process so it
// can be SIGKILLed).
func TestArgsGiveTheSameOptions(t *testing.T) {
	changed := DefaultOptions()
	changed.MaxParallelMigrations, changed.DefaultReplayCutoff, changed.Evacuate = 9, 3*time.Minute, false
	changed.Sidecar.AllowedUsers = []string{"system:serviceaccount:ops:ms2m", "alice"}
	changed.SchedulerExtender.BindAddress, changed.WebhookCertDir, changed.MetricsAddr = "127.0.0.1:9999", "/tmp/certs dir", ""
	for name, want := range map[string]Options{"defaults": DefaultOptions(), "changed": changed} {
		got := DefaultOptions()
		fs := flag.NewFlagSet("ms2m-manager", flag.ContinueOnError)
		got.BindFlags(fs)
		if err := fs.Parse(want.Args()); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: options from Args %q:\n%+v\nwant\n%+v", name, want.Args(), got, want)
		}
	}
}

// TestManagerServesProbesWebhooksAndTakesTheLease runs the manager against a
// real API server: it must take its leader lease, answer the probes a
// Deployment's kubelet will call, admit pods through its webhook and answer
// the scheduler extender's filter from its informers.
func TestManagerServesProbesWebhooksAndTakesTheLease(t *testing.T) {
	env := testenv.Start(t, testenv.Options{WebhookInstallOptions: envtest.WebhookInstallOptions{
		Paths: []string{filepath.Join(testenv.RepoRoot(), "config", "webhook")},
	}})
	opts := DefaultOptions()
	opts.WebhookPort = env.Webhook().LocalServingPort
	opts.WebhookCertDir = env.Webhook().LocalServingCertDir
	opts.MetricsAddr = "127.0.0.1:0"
	opts.ProbeAddr = testenv.FreeAddr(t)
	opts.LeaderElectionNamespace = "default"
	opts.SchedulerExtender.BindAddress = testenv.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, env.Config, opts) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager exited with %v", err)
		}
	})

	for _, path := range []string{"/healthz", "/readyz"} {
		expect.Eventually(t, "probe answers 200", func() error {
			resp, err := http.Get("http://" + opts.ProbeAddr + path)
			if err != nil {
				return err
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s answered %d", path, resp.StatusCode)
			}
			return nil
		})
	}
	expect.Eventually(t, "leader lease taken", func() error {
		lease := &coordinationv1.Lease{}
		key := client.ObjectKey{Namespace: "default", Name: "ms2m-manager.migration.ms2m.io"}
		if err := env.Client.Get(ctx, key, lease); err != nil {
			return err
		}
		if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			return fmt.Errorf("lease has no holder")
		}
		return nil
	})

	// The webhook is wired: a migratable pod is stored with its sidecar.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "consumer", Namespace: "default", Annotations: map[string]string{
			v1.AnnotationMigratable: "true", v1.AnnotationKafkaBrokers: "kafka:9092",
			v1.AnnotationKafkaTopic: "orders", v1.AnnotationKafkaGroup: "g", v1.AnnotationAppPort: "8080",
		}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example/consumer"}}},
	}
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if n := len(pod.Spec.Containers); n != 2 || pod.Spec.Containers[1].Name != v1.SidecarContainerName {
		t.Fatalf("manager's webhook did not inject the sidecar: %d containers", n)
	}

	// The extender is wired to the manager's informers: a node created in
	// the API server is judged by its labels (nodeCacheCapable request).
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "no-criu", Labels: map[string]string{v1.LabelCheckpointRestore: "false"}}}
	if err := env.Client.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	expect.Eventually(t, "extender refuses the node by its labels", func() error {
		body := `{"Pod":{"metadata":{"name":"p","namespace":"default"}},"NodeNames":["no-criu"]}`
		resp, err := http.Post("http://"+opts.SchedulerExtender.BindAddress+scheduler.FilterPath, "application/json", strings.NewReader(body))
		if err != nil {
			return err
		}
		defer func() { _ = resp.Body.Close() }()
		var res extenderv1.ExtenderFilterResult
		if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
			return fmt.Errorf("status %d: %w", resp.StatusCode, err)
		}
		if msg := res.FailedAndUnresolvableNodes["no-criu"]; !strings.Contains(msg, scheduler.ReasonCheckpointRestoreUnsupported) {
			return fmt.Errorf("filter result %+v", res)
		}
		return nil
	})
}
