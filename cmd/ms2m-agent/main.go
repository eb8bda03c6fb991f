// Command ms2m-agent is the ms2m node agent (DaemonSet): it checkpoints
// migrating pods through its own kubelet, pushes the checkpoint images and
// labels its node's checkpoint/restore capability. See pkg/agent.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ms2m/ms2m/pkg/agent"
	"github.com/ms2m/ms2m/pkg/checkpoint"
	"github.com/ms2m/ms2m/pkg/clientconfig"
)

func main() {
	var o agent.Options
	var probeAddr, metricsAddr, hostRoot, podName, podUID string
	var interval time.Duration
	var controlPort int
	flag.StringVar(&o.NodeName, "node-name", os.Getenv("NODE_NAME"), "This node's name (env NODE_NAME, from the downward API's spec.nodeName).")
	flag.StringVar(&o.KubeletCAFile, "kubelet-ca-file", "", "CA that signed the kubelet's serving certificate.")
	flag.BoolVar(&o.KubeletInsecureTLS, "kubelet-insecure-tls", false, "Do not verify the kubelet's certificate (self-signed kubelets).")
	flag.StringVar(&o.Repository, "checkpoint-image-repository", "", "Repository for checkpoint images of migrations that name none.")
	flag.Var((*checkpoint.Hosts)(&o.AllowedRegistries), "allowed-registries", "Comma-separated registry hosts (host[:port]) checkpoint images may be pushed to (default: the registry of --checkpoint-image-repository). Checkpoint images hold the whole memory of a process.")
	flag.Var((*checkpoint.Hosts)(&o.PlainHTTPRegistries), "plain-http-registries", "Comma-separated registry hosts reached without TLS (default: none; every other registry is TLS only).")
	flag.StringVar(&o.CheckpointDir, "checkpoint-dir", agent.DefaultCheckpointDir, "The kubelet's checkpoint directory: the only place checkpoint archives are read from (and removed).")
	flag.DurationVar(&o.CheckpointTimeout, "checkpoint-timeout", time.Minute, "Bound on one kubelet checkpoint call.")
	flag.IntVar(&controlPort, "sidecar-control-port", agent.DefaultSidecarControlPort, "The replay sidecars' control port (the manager's --sidecar-control-port): the agent pauses a source's sidecar for the checkpoint and resumes it.")
	flag.StringVar(&podName, "pod-name", os.Getenv("POD_NAME"), "The agent's pod (env POD_NAME, downward API metadata.name): its tokens for the sidecars are bound to it, so they name its node.")
	flag.StringVar(&podUID, "pod-uid", os.Getenv("POD_UID"), "The agent's pod's UID (env POD_UID, downward API metadata.uid).")
	flag.StringVar(&hostRoot, "host-root", "/", "Where the host's filesystem is mounted: the runtime's configuration, criu (with its package metadata) and the containers' cgroups (/sys/fs/cgroup) are read under it.")
	flag.DurationVar(&interval, "probe-interval", 5*time.Minute, "How often the node's checkpoint/restore capability is probed.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8082", "Address of /healthz and /readyz.")
	flag.StringVar(&metricsAddr, "metrics-bind-address", "0", "Address of the metrics endpoint; 0 disables it.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	o.SidecarControlPort = int32(controlPort)
	o.HostRoot = hostRoot
	if err := run(o, probeAddr, metricsAddr, hostRoot, podName, podUID, interval); err != nil {
		fmt.Fprintln(os.Stderr, "ms2m-agent:", err)
		os.Exit(1)
	}
}

func run(o agent.Options, probeAddr, metricsAddr, hostRoot, podName, podUID string, interval time.Duration) error {
	if o.NodeName == "" {
		return fmt.Errorf("--node-name (env NODE_NAME) is required")
	}
	if o.KubeletCAFile == "" && !o.KubeletInsecureTLS {
		return fmt.Errorf("set --kubelet-ca-file, or --kubelet-insecure-tls for self-signed kubelets")
	}
	if err := o.ValidateRepository(); err != nil {
		return fmt.Errorf("--checkpoint-image-repository: %w", err)
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	o.Token = clientconfig.TokenSource(cfg)
	tokens, err := clientconfig.NewPodAudienceTokens(cfg, podName, podUID)
	if err != nil {
		return fmt.Errorf("--pod-name, --pod-uid: %w", err)
	}
	o.SidecarTokens = tokens.Token
	scheme, err := clientconfig.Scheme()
	if err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: scheme, HealthProbeBindAddress: probeAddr,
		Metrics: metricsserver.Options{BindAddress: metricsAddr}})
	if err != nil {
		return err
	}
	if err := (&agent.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Opts: o}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := mgr.Add(&agent.Labeler{Client: mgr.GetClient(), NodeName: o.NodeName, Prober: agent.Prober{HostRoot: hostRoot}, Interval: interval,
		Recorder: mgr.GetEventRecorderFor("ms2m-agent")}); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	return mgr.Start(ctrl.SetupSignalHandler())
}
