// Command ms2m-replay is the replay sidecar the webhook injects into
// migratable pods: it consumes the pod's Kafka topic and delivers each
// message to the app over HTTP, and lets the ms2m manager pause, fence and
// hand it over during a migration. It is configured by the environment the
// webhook sets (see pkg/replay OptionsFromEnv).
//
// It runs in every migratable pod, so it stays small: it imports no
// Kubernetes clientset and not the controller-runtime root package, which
// would link (and page in) every Kubernetes API group.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager/signals"

	"github.com/ms2m/ms2m/pkg/replay"
)

func main() {
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: ms2m-replay [flags]\n\nConfigured by the environment the ms2m webhook injects: %s, %s, %s, %s, %s, %s, %s,\n%s, %s, %s, %s, %s, %s, %s; on a migration target %s or %s.\n\nFlags:\n",
			replay.EnvBrokers, replay.EnvTopic, replay.EnvGroup, replay.EnvAppPort, replay.EnvPodIP, replay.EnvPodNamespace, replay.EnvPodUID,
			replay.EnvDeliveryPath, replay.EnvControlPort, replay.EnvMetricsPort, replay.EnvAppBatchSize,
			replay.EnvMaxAttempts, replay.EnvDeadLetterTopic, replay.EnvAppQuiescePath,
			replay.EnvReplayFrom, replay.EnvStandby)
		flag.PrintDefaults()
	}
	installTo := flag.String("install-to", "", "Copy this executable to the given path (mode 0755) and exit: the first of a restored pod's two base-image init containers (see migratable.BaseImageInitContainers).")
	noop := flag.Bool("noop", false, "Exit at once: run from a restored pod's base image, so that the kubelet pulls that image onto the node before the app container is restored from the checkpoint.")
	flag.Parse()
	switch {
	case *noop:
		return
	case *installTo != "":
		if err := installSelf(*installTo); err != nil {
			fmt.Fprintln(os.Stderr, "ms2m-replay --install-to:", err)
			os.Exit(1)
		}
		return
	}
	log.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	logger := log.Log.WithName("ms2m-replay")

	opts, err := replay.OptionsFromEnv(os.Getenv)
	if err != nil {
		logger.Error(err, "invalid configuration")
		os.Exit(2)
	}
	cfg, err := config.GetConfig()
	if err != nil {
		logger.Error(err, "no Kubernetes API access for authenticating the control API")
		os.Exit(1)
	}
	// The control API accepts tokens for this pod's audience signed by the
	// cluster's service-account issuer, checked offline against the keys
	// the API server publishes to every service account.
	keys, err := replay.NewIssuerKeys(cfg)
	if err != nil {
		logger.Error(err, "no Kubernetes API access for authenticating the control API")
		os.Exit(1)
	}
	ctx := log.IntoContext(signals.SetupSignalHandler(), logger)
	if err := replay.Run(ctx, opts, &replay.TokenVerifier{Audience: opts.ControlAudience, Keys: keys}); err != nil {
		logger.Error(err, "sidecar stopped")
		os.Exit(1)
	}
}

// installSelf copies the running executable (static: it runs in any Linux
// image of the same architecture) to path.
func installSelf(path string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	in, err := os.Open(self)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	out, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}
