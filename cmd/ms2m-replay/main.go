// Command ms2m-replay is the replay sidecar the webhook injects into
// migratable pods: it consumes the pod's Kafka topic and delivers each
// message to the app over HTTP, and lets the ms2m manager pause, fence and
// hand it over during a migration. It is configured by the environment the
// webhook sets (see pkg/replay OptionsFromEnv).
package main

import (
	"flag"
	"fmt"
	"os"

	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/ms2m/ms2m/pkg/replay"
)

func main() {
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: ms2m-replay [flags]\n\nConfigured by the environment the ms2m webhook injects: %s, %s, %s, %s, %s,\n%s, %s, %s, and on a migration target %s.\n\nFlags:\n",
			replay.EnvBrokers, replay.EnvTopic, replay.EnvGroup, replay.EnvAppPort, replay.EnvPodIP,
			replay.EnvDeliveryPath, replay.EnvControlPort, replay.EnvMetricsPort, replay.EnvReplayFrom)
		flag.PrintDefaults()
	}
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("ms2m-replay")

	opts, err := replay.OptionsFromEnv(os.Getenv)
	if err != nil {
		log.Error(err, "invalid configuration")
		os.Exit(2)
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		log.Error(err, "no Kubernetes API access for authenticating the control API")
		os.Exit(1)
	}
	auth := replay.TokenReviewer{Client: kubernetes.NewForConfigOrDie(cfg).AuthenticationV1().TokenReviews()}
	ctx := ctrl.LoggerInto(ctrl.SetupSignalHandler(), log)
	if err := replay.Run(ctx, opts, auth); err != nil {
		log.Error(err, "sidecar stopped")
		os.Exit(1)
	}
}
