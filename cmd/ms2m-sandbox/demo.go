package main

import (
	"context"
	"flag"
	"fmt"
	"os/signal"
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

// demo deploys the example workload with its producer on the sandbox
// (the running one, or one it starts and stops), and prints the zero-loss
// verdict. It exits non-zero when anything was lost or duplicated.
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
		Name: "orders", Brokers: []string{broker}, Topic: ns.Name + "-orders",
		Rate: flagFloat(fs, "rate"), Count: int64(flagInt(fs, "count")), ProcessTime: flagDuration(fs, "process-time"),
	}
	d, err := deploy.DeployConsumer(ctx, client, ns.Name, e, say)
	if err != nil {
		return err
	}
	if err := deploy.StartProducer(ctx, client, ns.Name, e, say); err != nil {
		return err
	}
	if err := deploy.WaitApplied(ctx, d, e.Count/3); err != nil {
		return err
	}
	say("a third of the stream processed; migrating the consumer live")
	m, err := deploy.Migrate(ctx, cfg, ns.Name, d.Pod.Name, "", say)
	if err != nil {
		return err
	}
	say("migration %s %s", m.Name, m.Status.Phase)
	fmt.Print(deploy.Timings(m))
	if err := deploy.WaitProducer(ctx, client, ns.Name, e); err != nil {
		return err
	}
	if d, err = deploy.FindConsumer(ctx, client, ns.Name, e); err != nil {
		return err
	}
	say("producer done; verifying on %s (node %s)", d.Pod.Name, d.Pod.Spec.NodeName)
	v, err := deploy.Verify(ctx, e, d.URL(), 2*time.Minute)
	if err != nil {
		return err
	}
	fmt.Println()
	fmt.Println(v)
	if !v.OK() {
		return fmt.Errorf("messages were lost, duplicated or the state is wrong")
	}
	return nil
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
