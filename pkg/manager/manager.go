// Package manager wires every ms2m controller, webhook and endpoint into one
// controller-runtime manager. The list in setup is the single place where
// components are registered: no init() self-registration.
package manager

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/ms2m/ms2m/pkg/checkpoint"
	"github.com/ms2m/ms2m/pkg/clientconfig"
	"github.com/ms2m/ms2m/pkg/controllers/evacuation"
	"github.com/ms2m/ms2m/pkg/controllers/images"
	"github.com/ms2m/ms2m/pkg/controllers/migration"
	"github.com/ms2m/ms2m/pkg/replay"
	"github.com/ms2m/ms2m/scheduler"
	"github.com/ms2m/ms2m/webhooks"
)

// Options are the manager's flags.
type Options struct {
	MetricsAddr               string
	ProbeAddr                 string
	LeaderElection            bool
	LeaderElectionNamespace   string
	CheckpointImageRepository string
	// CheckpointImageRetention says which checkpoint images the manager
	// deletes once no pod runs from them (images.ParseRetention).
	CheckpointImageRetention string
	// CheckpointImageDeletionTimeout bounds how long a deleted restored pod
	// waits for its checkpoint image's deletion.
	CheckpointImageDeletionTimeout time.Duration
	// AllowedRegistries (host[:port]) are where the manager deletes
	// checkpoint images; empty: the default repository's registry only.
	AllowedRegistries []string
	// PlainHTTPRegistries are reached without TLS.
	PlainHTTPRegistries   []string
	MaxParallelMigrations int
	MaxOutboundPerNode    int
	// MaxParallelPerNamespace: 0 is one less than MaxParallelMigrations.
	MaxParallelPerNamespace int
	MigrationWorkers        int
	DisruptionBudgetTimeout time.Duration
	DefaultReplayCutoff     time.Duration
	// WebhookPort serves the admission webhooks over TLS; 0 disables them.
	WebhookPort int
	// WebhookHost is the address the webhooks listen on ("": every one).
	WebhookHost    string
	WebhookCertDir string
	// ServingCertSecret (namespace/name), when set, is the chart's
	// self-signed serving-certificate Secret, which the manager renews
	// before it expires (see certRotator).
	ServingCertSecret string
	// Restartable lets the manager be started again in the same process
	// (the sandbox restarts its in-process manager); controller names are
	// then not checked for uniqueness.
	Restartable bool
	Sidecar     webhooks.SidecarOptions
	// EvictionFallback decides evictions of pods whose live migration
	// failed ("deny" or "allow").
	EvictionFallback string
	// Evacuate starts live migrations off cordoned or ms2m.io/drain-tainted
	// nodes without waiting for evictions.
	Evacuate bool
	// SchedulerExtender serves the kube-scheduler extender endpoints;
	// disabled when its bind address is empty or "0".
	SchedulerExtender scheduler.ServerOptions
}

// schedulerExtenderFlag prefixes the extender's flags.
const schedulerExtenderFlag = "scheduler-extender"

// DefaultOptions are the defaults documented in --help.
func DefaultOptions() Options {
	return Options{
		MetricsAddr:                    ":8080",
		ProbeAddr:                      ":8081",
		LeaderElection:                 true,
		CheckpointImageRetention:       string(images.RetainNone),
		CheckpointImageDeletionTimeout: images.DefaultOptions().GiveUpAfter,
		MaxParallelMigrations:          5,
		MaxOutboundPerNode:             2,
		MigrationWorkers:               8,
		DisruptionBudgetTimeout:        10 * time.Minute,
		DefaultReplayCutoff:            120 * time.Second,
		WebhookPort:                    9443,
		Sidecar:                        webhooks.DefaultSidecarOptions(),
		EvictionFallback:               string(webhooks.FallbackDeny),
		Evacuate:                       true,
		SchedulerExtender:              scheduler.ServerOptions{BindAddress: "0", MaxRequestBytes: scheduler.DefaultMaxRequestBytes},
	}
}

// BindFlags registers the options as flags.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", o.MetricsAddr, "Address of the Prometheus metrics endpoint; 0 disables it.")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", o.ProbeAddr, "Address of the /healthz and /readyz endpoints.")
	fs.BoolVar(&o.LeaderElection, "leader-elect", o.LeaderElection, "Run only while holding the leader lease, so replicas can stand by.")
	fs.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", o.LeaderElectionNamespace, "Namespace of the leader lease (default: the pod's namespace).")
	fs.StringVar(&o.CheckpointImageRepository, "checkpoint-image-repository", o.CheckpointImageRepository,
		"Repository checkpoint images are pushed to when a StatefulMigration sets no spec.checkpointImageRepository.")
	fs.StringVar(&o.CheckpointImageRetention, "checkpoint-image-retention", o.CheckpointImageRetention,
		"Which checkpoint images the manager deletes from their registry once no pod runs from them (a restored pod's deletion waits for it): "+
			"delete (all), keep-failed (keep failed migrations' images, for debugging) or keep (none; the registry's own retention must remove them).")
	fs.DurationVar(&o.CheckpointImageDeletionTimeout, "checkpoint-image-deletion-timeout", o.CheckpointImageDeletionTimeout,
		"How long a deleted restored pod waits for its checkpoint image's deletion when the registry does not delete it; then the pod goes, with a Warning Event.")
	fs.Var((*checkpoint.Hosts)(&o.AllowedRegistries), "allowed-registries",
		"Comma-separated registry hosts (host[:port]) where the manager deletes checkpoint images (default: the registry of --checkpoint-image-repository).")
	fs.Var((*checkpoint.Hosts)(&o.PlainHTTPRegistries), "plain-http-registries",
		"Comma-separated registry hosts the manager reaches over plain HTTP; every other only over verified HTTPS.")
	fs.IntVar(&o.MaxParallelMigrations, "max-parallel-migrations", o.MaxParallelMigrations, "Migrations running at once in the cluster; more wait in Pending.")
	fs.IntVar(&o.MaxOutboundPerNode, "max-outbound-migrations-per-node", o.MaxOutboundPerNode, "Migrations leaving one node at once; more wait in Pending.")
	fs.IntVar(&o.MaxParallelPerNamespace, "max-parallel-migrations-per-namespace", o.MaxParallelPerNamespace,
		"Migrations running at once in one namespace; more wait in Pending, so one tenant cannot take every slot (0: one less than --max-parallel-migrations, at least 1).")
	fs.IntVar(&o.MigrationWorkers, "migration-workers", o.MigrationWorkers,
		"Migrations reconciled at once: one whose sidecar or broker does not answer holds one worker, not the others.")
	fs.DurationVar(&o.DisruptionBudgetTimeout, "disruption-budget-timeout", o.DisruptionBudgetTimeout,
		"How long a handover waits for a PodDisruptionBudget to allow a disruption before the migration fails (the source serves on; a drain's eviction then follows --eviction-fallback).")
	fs.IntVar(&o.WebhookPort, "webhook-port", o.WebhookPort, "Port of the admission webhooks (TLS); 0 disables them.")
	fs.StringVar(&o.WebhookHost, "webhook-host", o.WebhookHost, "Address the admission webhooks listen on, e.g. the pod IP (default: every address).")
	fs.StringVar(&o.ServingCertSecret, "serving-cert-secret", o.ServingCertSecret,
		"namespace/name of the self-signed serving-certificate Secret (with ca.crt and ca.key) whose certificate the manager renews when its "+AnnotationRenewAfter+" annotation is due; empty: no renewal (cert-manager, or certificates of your own).")
	fs.StringVar(&o.WebhookCertDir, "webhook-cert-dir", o.WebhookCertDir, "Directory with tls.crt and tls.key for the webhooks (default: the system temp dir's k8s-webhook-server/serving-certs).")
	fs.StringVar(&o.Sidecar.Image, "sidecar-image", o.Sidecar.Image, "Image of the injected replay sidecar (runs /ms2m/ms2m-replay).")
	fs.Var((*userList)(&o.Sidecar.AllowedUsers), "sidecar-allowed-users", "Comma-separated users the injected sidecars accept control calls from: the manager's own identity, "+
		"system:serviceaccount:NAMESPACE:SERVICEACCOUNT (default: the sidecar's, system:serviceaccount:ms2m-system:ms2m-manager).")
	fs.Var((*userList)(&o.Sidecar.NodeAgents), "sidecar-node-agents", "Comma-separated users the injected sidecars let pause and resume them from a pod on their own node: the node agent's identity, "+
		"system:serviceaccount:NAMESPACE:SERVICEACCOUNT (default: the sidecar's, system:serviceaccount:ms2m-system:ms2m-agent).")
	fs.StringVar(&o.EvictionFallback, "eviction-fallback", o.EvictionFallback,
		"Eviction of a migratable pod whose live migration failed: deny (keep it serving and refuse; delete the failed StatefulMigration to retry) or allow (evict it as an ordinary pod).")
	fs.BoolVar(&o.Evacuate, "evacuate-draining-nodes", o.Evacuate,
		"Start live migrations of the migratable pods of a node as soon as it is cordoned or tainted ms2m.io/drain, before evictions arrive; uncordoning cancels those not yet started.")
	fs.DurationVar(&o.DefaultReplayCutoff, "default-replay-cutoff", o.DefaultReplayCutoff, "Replay cutoff for migrations that set none.")
	x := &o.SchedulerExtender
	fs.StringVar(&x.BindAddress, schedulerExtenderFlag+"-bind-address", x.BindAddress,
		"Address (host:port) of the kube-scheduler extender endpoints /filter and /prioritize; empty or 0 disables them. See docs/scheduler.md.")
	fs.StringVar(&x.CertFile, schedulerExtenderFlag+"-cert-file", x.CertFile, "TLS certificate of the scheduler extender (with --scheduler-extender-key-file); plain HTTP without.")
	fs.StringVar(&x.KeyFile, schedulerExtenderFlag+"-key-file", x.KeyFile, "TLS key of the scheduler extender.")
	fs.Int64Var(&x.MaxRequestBytes, schedulerExtenderFlag+"-max-request-bytes", x.MaxRequestBytes,
		"Largest request body the scheduler extender accepts (bigger ones get 413).")
}

// Args are the command-line flags that give a manager started with them
// these options: BindFlags read back, so the two never drift apart (the
// sandbox starts the manager as a process with them). Only the options
// that differ from DefaultOptions are named.
func (o Options) Args() []string {
	fs, defaults := flag.NewFlagSet("ms2m-manager", flag.ContinueOnError), flag.NewFlagSet("defaults", flag.ContinueOnError)
	o.BindFlags(fs)
	d := DefaultOptions()
	d.BindFlags(defaults)
	var args []string
	fs.VisitAll(func(f *flag.Flag) {
		if v := f.Value.String(); v != defaults.Lookup(f.Name).Value.String() {
			args = append(args, "--"+f.Name+"="+v)
		}
	})
	return args
}

// userList is a comma-separated list of user names as a flag value.
type userList []string

func (l *userList) String() string { return strings.Join(*l, ",") }

func (l *userList) Set(v string) error {
	if *l = checkpoint.SplitList(v); len(*l) == 0 {
		return errors.New("names no user")
	}
	return nil
}

// Validate reports the first flag that makes no sense, by name.
func (o Options) Validate() error {
	var errs []error
	if o.MaxParallelMigrations < 1 {
		errs = append(errs, fmt.Errorf("--max-parallel-migrations must be at least 1, got %d", o.MaxParallelMigrations))
	}
	if o.MaxOutboundPerNode < 1 {
		errs = append(errs, fmt.Errorf("--max-outbound-migrations-per-node must be at least 1, got %d", o.MaxOutboundPerNode))
	}
	if o.CheckpointImageRepository != "" {
		if _, err := checkpoint.ParseRepository(o.CheckpointImageRepository); err != nil {
			errs = append(errs, fmt.Errorf("--checkpoint-image-repository: %w", err))
		}
	}
	if _, err := images.ParseRetention(o.CheckpointImageRetention); err != nil {
		errs = append(errs, err)
	}
	if o.CheckpointImageDeletionTimeout < time.Second {
		errs = append(errs, fmt.Errorf("--checkpoint-image-deletion-timeout must be at least 1s, got %s", o.CheckpointImageDeletionTimeout))
	}
	if o.ServingCertSecret != "" {
		if ns, n, ok := strings.Cut(o.ServingCertSecret, "/"); !ok || ns == "" || n == "" || strings.Contains(n, "/") {
			errs = append(errs, fmt.Errorf("--serving-cert-secret must be namespace/name, got %q", o.ServingCertSecret))
		}
	}
	if o.MaxParallelPerNamespace < 0 || o.MaxParallelPerNamespace > o.MaxParallelMigrations {
		errs = append(errs, fmt.Errorf("--max-parallel-migrations-per-namespace must be between 0 and --max-parallel-migrations (%d), got %d", o.MaxParallelMigrations, o.MaxParallelPerNamespace))
	}
	if o.MigrationWorkers < 1 {
		errs = append(errs, fmt.Errorf("--migration-workers must be at least 1, got %d", o.MigrationWorkers))
	}
	if o.DisruptionBudgetTimeout < time.Second {
		errs = append(errs, fmt.Errorf("--disruption-budget-timeout must be at least 1s, got %s", o.DisruptionBudgetTimeout))
	}
	if o.DefaultReplayCutoff < time.Second {
		errs = append(errs, fmt.Errorf("--default-replay-cutoff must be at least 1s, got %s", o.DefaultReplayCutoff))
	}
	if o.WebhookPort < 0 || o.WebhookPort > 65535 {
		errs = append(errs, fmt.Errorf("--webhook-port must be between 0 and 65535, got %d", o.WebhookPort))
	}
	if o.WebhookPort != 0 && o.Sidecar.Image == "" {
		errs = append(errs, errors.New("--sidecar-image must not be empty"))
	}
	if _, err := webhooks.ParseEvictionFallback(o.EvictionFallback); err != nil {
		errs = append(errs, err)
	}
	if err := o.SchedulerExtender.Validate(schedulerExtenderFlag); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Run builds the manager, registers every component and blocks until ctx
// ends.
func Run(ctx context.Context, cfg *rest.Config, opts Options) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	scheme, err := clientconfig.Scheme()
	if err != nil {
		return err
	}
	mgrOpts := ctrl.Options{
		Controller:              ctrlconfig.Controller{SkipNameValidation: ptr.To(opts.Restartable)},
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: opts.MetricsAddr},
		HealthProbeBindAddress:  opts.ProbeAddr,
		LeaderElection:          opts.LeaderElection,
		LeaderElectionID:        "ms2m-manager.migration.ms2m.io",
		LeaderElectionNamespace: opts.LeaderElectionNamespace,
	}
	if opts.WebhookPort != 0 {
		mgrOpts.WebhookServer = webhook.NewServer(webhook.Options{Host: opts.WebhookHost, Port: opts.WebhookPort, CertDir: opts.WebhookCertDir})
	}
	mgr, err := ctrl.NewManager(cfg, mgrOpts)
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}
	if err := setup(mgr, opts); err != nil {
		return err
	}
	return mgr.Start(ctx)
}

// The events the manager records (cluster-wide) and, in its own namespace
// only (a Role: the chart renders it in the release namespace, with the
// manager's service-account name), its leader lease and the tokens of its
// own service account it gives the sidecars (clientconfig.AudienceTokens).
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=ms2m-system,resources=leases,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups="",namespace=ms2m-system,resources=serviceaccounts/token,verbs=create,resourceNames=ms2m-manager

// setup is the one list of everything the manager runs. The migration and
// evacuation controllers are added here as they land.
func setup(mgr ctrl.Manager, opts Options) error {
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	registerCertExpiry(opts)
	if opts.ServingCertSecret != "" {
		ns, name, _ := strings.Cut(opts.ServingCertSecret, "/")
		if err := mgr.Add(&certRotator{reader: mgr.GetAPIReader(), writer: mgr.GetClient(),
			secret: types.NamespacedName{Namespace: ns, Name: name}, interval: time.Hour}); err != nil {
			return err
		}
	}
	if opts.WebhookPort != 0 {
		hooks := mgr.GetWebhookServer()
		mutator := webhooks.NewPodMutator(admission.NewDecoder(mgr.GetScheme()), opts.Sidecar)
		mutator.Migrations = mgr.GetClient()
		hooks.Register(webhooks.PodMutationPath, &webhook.Admission{Handler: mutator})
		fallback, _ := webhooks.ParseEvictionFallback(opts.EvictionFallback) // validated
		hooks.Register(webhooks.PodEvictionPath, &webhook.Admission{
			Handler: &webhooks.PodEvictor{Reader: mgr.GetClient(), Writer: mgr.GetClient(), Fallback: fallback},
		})
		// Ready only once the webhook server answers, so the API server is
		// not sent to a pod that cannot admit yet.
		if err := mgr.AddReadyzCheck("webhooks", hooks.StartedChecker()); err != nil {
			return err
		}
	}
	// The scheduler extender's view of the nodes: served to the
	// kube-scheduler when enabled, and always the controller's automatic
	// target choice (scheduler.RankNodes over the same Cache).
	nodes := scheduler.NewCache(mgr.GetCache())
	if err := mgr.Add(nodes); err != nil {
		return err
	}
	if opts.SchedulerExtender.Enabled() {
		extender := scheduler.NewServer(opts.SchedulerExtender, nodes, mgr.GetLogger().WithName("scheduler-extender"))
		if err := mgr.Add(extender); err != nil {
			return err
		}
		if err := mgr.AddReadyzCheck("scheduler-extender", extender.ReadyCheck); err != nil {
			return err
		}
	}
	ctl := controllerOptions(opts)
	// Each sidecar gets a token of the manager's service account bound to
	// that sidecar's pod (replay.ControlAudience), never the manager's
	// own API credential: sidecars run in tenants' pods.
	sidecarTokens, err := clientconfig.NewAudienceTokens(mgr.GetConfig())
	if err != nil {
		return err
	}
	migrations := &migration.Reconciler{
		Client: mgr.GetClient(), Scheme: mgr.GetScheme(), Recorder: mgr.GetEventRecorderFor("ms2m-controller"),
		Sidecars: &replay.Client{Token: sidecarTokens.Token},
		Nodes:    nodes, Opts: ctl, Metrics: controllerMetrics(),
	}
	if err := migrations.SetupWithManager(mgr); err != nil {
		return err
	}
	retention, _ := images.ParseRetention(opts.CheckpointImageRetention) // validated
	regs := checkpoint.NewRegistries(opts.CheckpointImageRepository, opts.AllowedRegistries, opts.PlainHTTPRegistries)
	cio := images.DefaultOptions()
	cio.Retention, cio.DefaultRepository, cio.Registries, cio.GiveUpAfter = retention, opts.CheckpointImageRepository, regs, opts.CheckpointImageDeletionTimeout
	cleaner := &images.Reconciler{
		Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("ms2m-checkpoint-images"), Opts: cio, Metrics: imageMetrics(),
		Delete: func(ctx context.Context, ref name.Digest) error {
			return checkpoint.Delete(ctx, ref, remote.WithAuthFromKeychain(checkpoint.Keychain), regs.Transport(remote.DefaultTransport))
		},
	}
	if err := cleaner.SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&images.FailedMigrations{Reconciler: cleaner}).SetupWithManager(mgr); err != nil {
		return err
	}
	if opts.Evacuate {
		ev := &evacuation.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("ms2m-evacuation")}
		if err := ev.SetupWithManager(mgr); err != nil {
			return err
		}
	}
	return nil
}

// controllerOptions are the migration controller's options from the
// manager's flags.
func controllerOptions(opts Options) migration.Options {
	ctl := migration.DefaultOptions()
	ctl.MaxParallel, ctl.MaxOutboundPerNode = opts.MaxParallelMigrations, opts.MaxOutboundPerNode
	ctl.MaxParallelPerNamespace, ctl.Workers, ctl.DisruptionBudgetTimeout = opts.MaxParallelPerNamespace, opts.MigrationWorkers, opts.DisruptionBudgetTimeout
	ctl.DefaultRepository, ctl.SidecarControlPort = opts.CheckpointImageRepository, opts.Sidecar.ControlPort
	ctl.DefaultReplayCutoff = opts.DefaultReplayCutoff
	return ctl
}

// controllerMetrics registers the controller's metrics once per process
// (a manager restarted in the same process, as in the sandbox, shares them).
var imageMetrics = sync.OnceValue(func() *images.Metrics { return images.NewMetrics(ctrlmetrics.Registry) })

var controllerMetrics = sync.OnceValue(func() *migration.Metrics { return migration.NewMetrics(ctrlmetrics.Registry) })
