package main

import (
	"context"
	"flag"
	"fmt"
	"os/signal"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ms2m/ms2m/internal/example/deploy"
	"github.com/ms2m/ms2m/pkg/sandbox"
)

// demo deploys the example workload (--replicas of the consumer in one
// consumer group) with its producer on the sandbox (the running one, or one
// it starts and stops), migrates one replica live, shows that the others
// were neither rebalanced nor paused, and prints the zero-loss verdict. It
// exits non-zero when anything was lost or duplicated, or another replica
// was disturbed.
func demo(fs *flag.FlagSet) error {
	dir := flagString(fs, "dir")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	say := func(format string, args ...any) {
		fmt.Printf("[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}

	var client kubernetes.Interface
	var cfg *rest.Config
	var broker string
	if running(dir) != 0 {
		st, err := sandbox.ReadState(dir)
		if err != nil {
			return err
		}
		if cfg, err = clientcmd.BuildConfigFromFlags("", st.Kubeconfig); err != nil {
			return err
		}
		if client, err = kubernetes.NewForConfig(cfg); err != nil {
			return err
		}
		broker = st.Broker
		say("using the sandbox running in %s", dir)
	} else {
		say("starting a sandbox in %s (control plane, broker, registry, %d simulated nodes, ms2m manager)", dir, flagInt(fs, "nodes"))
		sb, err := startSandbox(ctx, fs)
		if err != nil {
			return err
		}
		if flagBool(fs, "keep") {
			defer func() {
				fmt.Printf("\nthe sandbox stays up until Ctrl-C: export KUBECONFIG=%s\n", sb.Kubeconfig)
				<-ctx.Done()
				sb.Stop()
			}()
		} else {
			defer sb.Stop()
		}
		client, broker, cfg = sb.Client, sb.Broker, sb.Config
		say("sandbox ready: export KUBECONFIG=%s", sb.Kubeconfig)
	}

	ns, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "demo-"}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	e := deploy.Example{
		Name: "orders", Brokers: []string{broker}, Topic: ns.Name + "-orders", Replicas: flagInt(fs, "replicas"),
		Rate: flagFloat(fs, "rate"), Count: int64(flagInt(fs, "count")), ProcessTime: flagDuration(fs, "process-time"),
	}
	if e.ReplicaCount() > 1 {
		e.Partitions = 2 * e.ReplicaCount()
	}
	ds, err := deploy.DeployConsumers(ctx, client, ns.Name, e, say)
	if err != nil {
		return err
	}
	if err := deploy.StartProducer(ctx, client, ns.Name, e, say); err != nil {
		return err
	}
	if err := deploy.WaitAppliedTotal(ctx, ds, e.Count/3); err != nil {
		return err
	}
	moved, others := ds[0], ds[1:]
	if len(others) == 0 {
		say("a third of the stream processed; migrating the consumer live")
	} else {
		say("a third of the stream processed; migrating replica %s live (the other %d keep consuming)", moved.Pod.Name, len(others))
	}
	before, err := sidecars(ctx, others)
	if err != nil {
		return err
	}
	m, err := deploy.Migrate(ctx, cfg, ns.Name, moved.Pod.Name, "", say)
	if err != nil {
		return err
	}
	say("migration %s %s", m.Name, m.Status.Phase)
	fmt.Print(deploy.Timings(m))
	undisturbed, err := reportOthers(ctx, others, before, say)
	if err != nil {
		return err
	}
	if err := deploy.WaitProducer(ctx, client, ns.Name, e); err != nil {
		return err
	}
	if ds, err = deploy.FindConsumers(ctx, client, ns.Name, e); err != nil {
		return err
	}
	if len(ds) == 1 {
		say("producer done; verifying on %s (node %s)", ds[0].Pod.Name, ds[0].Pod.Spec.NodeName)
	} else {
		say("producer done; verifying on the %d replicas %s", len(ds), podsOn(ds))
	}
	v, err := deploy.VerifyReplicas(ctx, e, ds, 2*time.Minute)
	if err != nil {
		return err
	}
	fmt.Println()
	fmt.Println(v)
	if !v.OK() {
		return fmt.Errorf("messages were lost, duplicated or the state is wrong")
	}
	if !undisturbed {
		return fmt.Errorf("the replicas not migrated were rebalanced or paused")
	}
	return nil
}

// sidecars reads the replicas' replay sidecars.
func sidecars(ctx context.Context, ds []deploy.Deployed) ([]deploy.Sidecar, error) {
	out := make([]deploy.Sidecar, len(ds))
	for i, d := range ds {
		s, err := d.Sidecar(ctx)
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

// reportOthers says, for each replica not migrated, whether its group
// generation and partitions stayed as they were before the migration (not
// rebalanced), no pause or fence reached it, and how many messages it
// delivered meanwhile; it reports whether all were undisturbed.
func reportOthers(ctx context.Context, others []deploy.Deployed, before []deploy.Sidecar, say func(string, ...any)) (bool, error) {
	after, err := sidecars(ctx, others)
	if err != nil {
		return false, err
	}
	ok := true
	for i, d := range others {
		b, a := before[i], after[i]
		verdict := "not rebalanced, never paused"
		if a.Generation != b.Generation || a.Partitions != b.Partitions || a.Pauses != b.Pauses || a.Fences != b.Fences || a.Delivered <= b.Delivered {
			verdict, ok = fmt.Sprintf("DISTURBED (pauses %d→%d, fences %d→%d)", b.Pauses, a.Pauses, b.Fences, a.Fences), false
		}
		say("replica %s (%s): group generation %d → %d, partitions %d → %d: %s; %d messages delivered during the migration",
			d.Pod.Name, d.Pod.Spec.NodeName, b.Generation, a.Generation, b.Partitions, a.Partitions, verdict, a.Delivered-b.Delivered)
	}
	return ok, nil
}

func podsOn(ds []deploy.Deployed) string {
	var b strings.Builder
	for i, d := range ds {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s (%s)", d.Pod.Name, d.Pod.Spec.NodeName)
	}
	return b.String()
}

// startSandbox starts a sandbox in this process with the flags' settings.
func startSandbox(ctx context.Context, fs *flag.FlagSet) (*sandbox.Sandbox, error) {
	opts, err := sandboxOptions(fs)
	if err != nil {
		return nil, err
	}
	return sandbox.Start(ctx, opts)
}

func flagFloat(fs *flag.FlagSet, name string) float64 {
	var f float64
	_, _ = fmt.Sscan(fs.Lookup(name).Value.String(), &f)
	return f
}

func flagDuration(fs *flag.FlagSet, name string) time.Duration {
	d, _ := time.ParseDuration(fs.Lookup(name).Value.String())
	return d
}
