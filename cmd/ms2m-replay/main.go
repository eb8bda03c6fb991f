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
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: ms2m-replay [flags]\n\nConfigured by the environment the ms2m webhook injects: %s, %s, %s, %s, %s,\n%s, %s, %s, %s, %s, %s, %s; on a migration target %s or %s.\n\nFlags:\n",
			replay.EnvBrokers, replay.EnvTopic, replay.EnvGroup, replay.EnvAppPort, replay.EnvPodIP,
			replay.EnvDeliveryPath, replay.EnvControlPort, replay.EnvMetricsPort, replay.EnvAppBatchSize,
			replay.EnvMaxAttempts, replay.EnvDeadLetterTopic, replay.EnvAppQuiescePath,
			replay.EnvReplayFrom, replay.EnvStandby)
		flag.PrintDefaults()
	}
	flag.Parse()
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
	reviews, err := replay.NewRESTTokenReviews(cfg)
	if err != nil {
		logger.Error(err, "no Kubernetes API access for authenticating the control API")
		os.Exit(1)
	}
	ctx := log.IntoContext(signals.SetupSignalHandler(), logger)
	if err := replay.Run(ctx, opts, replay.TokenReviewer{Client: reviews}); err != nil {
		logger.Error(err, "sidecar stopped")
		os.Exit(1)
	}
}
