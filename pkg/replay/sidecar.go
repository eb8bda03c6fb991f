package replay

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/segmentio/kafka-go"
	"k8s.io/apimachinery/pkg/util/sets"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// Environment variables the webhook sets on the sidecar.
const (
	EnvBrokers = "MS2M_KAFKA_BROKERS"
	EnvTopic   = "MS2M_KAFKA_TOPIC"
	EnvGroup   = "MS2M_KAFKA_GROUP"
	// EnvGroupInstanceID makes the sidecar a static member of the group
	// (KIP-345): the webhook sets the pod's name, a migration's target
	// keeps its source's, so the broker hands the target the source's
	// place without a rebalance. The group.instance.id is it qualified by
	// EnvPodNamespace (see InstanceID).
	EnvGroupInstanceID = "MS2M_GROUP_INSTANCE_ID"
	// EnvPodNamespace is the pod's namespace (downward API).
	EnvPodNamespace = "POD_NAMESPACE"
	// EnvPodUID is the pod's UID (downward API): with the namespace, the
	// audience of the tokens the control API accepts (ControlAudience).
	EnvPodUID       = "POD_UID"
	EnvAppPort      = "MS2M_APP_PORT"
	EnvDeliveryPath = "MS2M_DELIVERY_PATH"
	EnvControlPort  = "MS2M_CONTROL_PORT"
	EnvMetricsPort  = "MS2M_METRICS_PORT"
	EnvPodIP        = "POD_IP"
	// EnvReplayFrom, set on a migration target, holds the checkpoint
	// offsets O as JSON ({"0": 1200, "1": 977}); the sidecar starts replaying.
	EnvReplayFrom = "MS2M_REPLAY_FROM"
	// EnvStandby "true" starts the sidecar consuming nothing until the
	// controller tells it where to replay from (POST /replay).
	EnvStandby = "MS2M_STANDBY"
	// EnvAppBatchSize above 1 (the ms2m.io/app-batch-size annotation) makes
	// the sidecar POST up to that many messages at once as a Batch.
	EnvAppBatchSize = "MS2M_APP_BATCH_SIZE"
	// EnvAppQuiescePath (ms2m.io/app-quiesce-path) is where the app is
	// told, at a pause, that its container is checkpointed next (see
	// QuiescePath).
	EnvAppQuiescePath = "MS2M_APP_QUIESCE_PATH"
	// EnvMode is where the sidecar starts, whatever the other variables say:
	// "fenced" consumes nothing until POST /rejoin (a migration's source
	// was fenced), "live" consumes live (a restored pod was handed over);
	// empty: as the other variables say. The webhook sets it from the
	// pod's migration.ms2m.io/sidecar-mode annotation.
	EnvMode = "MS2M_MODE"
	// EnvMaxAttempts (ms2m.io/max-delivery-attempts) is how many times a
	// message the app refuses is delivered before it is dead-lettered.
	EnvMaxAttempts = "MS2M_MAX_DELIVERY_ATTEMPTS"
	// EnvDeadLetterTopic (ms2m.io/dead-letter-topic) receives them.
	EnvDeadLetterTopic = "MS2M_DEAD_LETTER_TOPIC"
	// EnvMemoryLimit is the sidecar container's memory limit in bytes (the
	// webhook sets it from limits.memory through the downward API): the Go
	// runtime's soft limit is set to MemoryLimitShare of it, so the
	// collector works harder before the kernel's OOM killer would act.
	// GOMEMLIMIT, when set, wins.
	EnvMemoryLimit = "MS2M_MEMORY_LIMIT"
	// EnvAllowedUsers lists (comma-separated) who may call the control API.
	EnvAllowedUsers = "MS2M_CONTROL_ALLOWED_USERS"
	// EnvNodeAgents lists (comma-separated) the node agents' users, who
	// may pause and resume the sidecar from a pod on its node (EnvNodeName).
	EnvNodeAgents = "MS2M_CONTROL_NODE_AGENTS"
	// EnvNodeName is the pod's node (downward API, spec.nodeName).
	EnvNodeName = "NODE_NAME"
)

// DefaultAllowedUser is the manager's service account as the chart installs it.
const DefaultAllowedUser = "system:serviceaccount:ms2m-system:ms2m-manager"

// DefaultNodeAgent is the node agent's service account as the chart
// installs it.
const DefaultNodeAgent = "system:serviceaccount:ms2m-system:ms2m-agent"

// Options configure a sidecar.
type Options struct {
	Brokers      []string
	Topic, Group string
	// GroupInstanceID, when set, makes the live consumer a static member.
	GroupInstanceID string
	// AppURL is where messages are POSTed.
	AppURL string
	// QuiesceURL is where the app is told that a checkpoint is next; ""
	// when it did not opt in.
	QuiesceURL  string
	ControlAddr string
	MetricsAddr string
	// ReplayFrom, when set, starts the sidecar as a migration target.
	ReplayFrom map[int]int64
	// Standby starts the sidecar consuming nothing until POST /replay.
	Standby bool
	// Fenced starts the sidecar fenced: out of the group until POST /rejoin.
	Fenced bool
	// BatchSize above 1 delivers batches (the app opted in).
	BatchSize int
	// MaxAttempts and DeadLetterTopic are the poison-message policy: a
	// message the app refuses MaxAttempts times goes to DeadLetterTopic.
	MaxAttempts     int
	DeadLetterTopic string
	// MemoryLimit is the container's memory limit in bytes (0: none known).
	MemoryLimit  int64
	AllowedUsers []string
	// NodeAgents may pause and resume from a pod on Node.
	NodeAgents []string
	Node       string
	// ControlAudience is the audience a control call's token must be for:
	// this pod's (ControlAudience of its namespace and UID).
	ControlAudience string
}

// MemoryLimitShare of the container's limit is the Go runtime's soft
// memory limit: the rest is for what the runtime does not count (the
// binary's text, thread stacks outside the heap) and headroom.
const MemoryLimitShare = 0.75

// OptionsFromEnv reads the options the webhook injected; an error names the
// variable at fault.
func OptionsFromEnv(getenv func(string) string) (Options, error) {
	var errs []error
	need := func(name string) string {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is required", name))
		}
		return v
	}
	port := func(name, def string) string {
		v := getenv(name)
		if v == "" {
			v = def
		}
		if p, err := strconv.Atoi(v); err != nil || p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("%s: %q is not a port number", name, v))
		}
		return v
	}
	o := Options{Topic: need(EnvTopic), Group: need(EnvGroup),
		GroupInstanceID: InstanceID(strings.TrimSpace(getenv(EnvGroupInstanceID)), strings.TrimSpace(getenv(EnvPodNamespace)))}
	for _, b := range strings.Split(need(EnvBrokers), ",") {
		if b = strings.TrimSpace(b); b != "" {
			o.Brokers = append(o.Brokers, b)
		}
	}
	ip := need(EnvPodIP)
	if ip != "" && net.ParseIP(ip) == nil {
		errs = append(errs, fmt.Errorf("%s: %q is not an IP address", EnvPodIP, ip))
	}
	path := getenv(EnvDeliveryPath)
	if path == "" {
		path = "/messages"
	}
	o.AppURL = "http://" + net.JoinHostPort(ip, port(EnvAppPort, "")) + path
	if q := getenv(EnvAppQuiescePath); q != "" {
		if !strings.HasPrefix(q, "/") {
			errs = append(errs, fmt.Errorf("%s: %q is not an absolute URL path", EnvAppQuiescePath, q))
		}
		o.QuiesceURL = "http://" + net.JoinHostPort(ip, port(EnvAppPort, "")) + q
	}
	o.ControlAddr = net.JoinHostPort(ip, port(EnvControlPort, "9901"))
	o.MetricsAddr = net.JoinHostPort(ip, port(EnvMetricsPort, "9902"))
	if v := getenv(EnvReplayFrom); v != "" {
		var from map[string]int64
		if err := json.Unmarshal([]byte(v), &from); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", EnvReplayFrom, err))
		} else if o.ReplayFrom, err = partitionOffsets(EnvReplayFrom, from); err != nil {
			errs = append(errs, err)
		} else if o.ReplayFrom == nil {
			o.ReplayFrom = map[int]int64{}
		}
	}
	switch v := getenv(EnvStandby); v {
	case "", "false":
	case "true":
		o.Standby = true
		if o.ReplayFrom != nil {
			errs = append(errs, fmt.Errorf("%s: a sidecar replaying from %s is not in standby", EnvStandby, EnvReplayFrom))
		}
	default:
		errs = append(errs, fmt.Errorf("%s: %q is neither true nor false", EnvStandby, v))
	}
	switch v := getenv(EnvMode); v {
	case "":
	case "fenced":
		o.Fenced, o.ReplayFrom, o.Standby = true, nil, false
	case "live":
		o.ReplayFrom, o.Standby = nil, false // handed over already
	default:
		errs = append(errs, fmt.Errorf("%s: %q is neither fenced nor live", EnvMode, v))
	}
	o.BatchSize = 1
	if v := getenv(EnvAppBatchSize); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxBatchSize {
			errs = append(errs, fmt.Errorf("%s: %q is not a batch size between 1 and %d", EnvAppBatchSize, v, MaxBatchSize))
		}
		o.BatchSize = n
	}
	o.MaxAttempts = DefaultMaxAttempts
	if v := getenv(EnvMaxAttempts); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxDeliveryAttempts {
			errs = append(errs, fmt.Errorf("%s: %q is not a number of attempts between 1 and %d", EnvMaxAttempts, v, MaxDeliveryAttempts))
		}
		o.MaxAttempts = n
	}
	o.DeadLetterTopic = strings.TrimSpace(getenv(EnvDeadLetterTopic))
	if o.DeadLetterTopic == "" {
		o.DeadLetterTopic = DefaultDeadLetterTopic(o.Topic)
	}
	if v := getenv(EnvMemoryLimit); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("%s: %q is not a number of bytes", EnvMemoryLimit, v))
		}
		o.MemoryLimit = n
	}
	o.ControlAudience = ControlAudience(need(EnvPodNamespace), need(EnvPodUID))
	o.AllowedUsers = []string{DefaultAllowedUser}
	if v := getenv(EnvAllowedUsers); v != "" {
		o.AllowedUsers = strings.Split(v, ",")
	}
	o.NodeAgents = []string{DefaultNodeAgent}
	if v := getenv(EnvNodeAgents); v != "" {
		o.NodeAgents = strings.Split(v, ",")
	}
	// Without its node the sidecar accepts no node agent.
	o.Node = strings.TrimSpace(getenv(EnvNodeName))
	return o, errors.Join(errs...)
}

// InstanceID is the group.instance.id of the pod named pod in namespace:
// "<pod>_<namespace>", as the kubelet names a pod, since a pod's name is
// unique only in its namespace and one consumer group may serve pods of
// several (two static members with one id fence each other). Both names
// are DNS names, without '_', and Kafka allows letters, digits, '.', '_'
// and '-' in an instance id, at most 249 of them: a longer one keeps its
// start and ends with a hash of the whole.
func InstanceID(pod, namespace string) string {
	if pod == "" {
		return ""
	}
	id := pod
	if namespace != "" {
		id += "_" + namespace
	}
	if len(id) > 249 {
		sum := sha256.Sum256([]byte(id))
		id = id[:249-17] + "-" + hex.EncodeToString(sum[:8])
	}
	return id
}

// Run runs a sidecar until ctx ends: the engine, the control API and the
// metrics endpoint.
func Run(ctx context.Context, o Options, auth Authenticator) error {
	logger := log.FromContext(ctx)
	if o.MemoryLimit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		soft := int64(float64(o.MemoryLimit) * MemoryLimitShare)
		debug.SetMemoryLimit(soft)
		logger.Info("Go memory limit set from the container's", "containerLimit", o.MemoryLimit, "goMemLimit", soft)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	metrics := NewMetrics(reg)
	d := &Deliverer{URL: o.AppURL, QuiesceURL: o.QuiesceURL, Client: &http.Client{Timeout: 30 * time.Second}, BatchSize: o.BatchSize, MaxAttempts: o.MaxAttempts,
		OnAppError: func(m kafka.Message, err error) {
			metrics.AppErrors.Inc()
			logger.Info("app did not acknowledge; retrying", "partition", m.Partition, "offset", m.Offset, "error", err.Error())
		}}
	src := &Kafka{Brokers: o.Brokers, Topic: o.Topic, Group: o.Group, InstanceID: o.GroupInstanceID, DeadLetterTopic: o.DeadLetterTopic,
		OnJoin: func(generation int, assigned []int) {
			metrics.joined(generation, assigned)
			logger.Info("joined the group as a static member", "group", o.Group, "instance", o.GroupInstanceID, "generation", generation, "partitions", assigned)
		}}
	var e *Engine
	switch {
	case o.Fenced:
		e = NewFenced(src, d)
		logger.Info("fenced before a restart: consuming nothing until POST /rejoin", "topic", o.Topic, "group", o.Group)
	case o.ReplayFrom != nil:
		e = NewReplay(src, d, o.ReplayFrom)
		logger.Info("replaying from checkpoint offsets", "from", o.ReplayFrom, "batchSize", o.BatchSize)
	case o.Standby:
		e = NewStandby(src, d)
		logger.Info("standby: waiting for POST /replay", "topic", o.Topic, "group", o.Group, "batchSize", o.BatchSize)
	default:
		e = NewLive(src, d)
		logger.Info("consuming live", "topic", o.Topic, "group", o.Group, "batchSize", o.BatchSize)
	}
	e.Metrics = metrics
	e.OnKafkaError = func(err error) { logger.Info("Kafka call failed; retrying", "error", err.Error()) }
	e.OnPoison = func(p *PoisonError, deadLettered bool) {
		m := p.Message
		if deadLettered {
			logger.Error(p.Err, "the app refused a message on every attempt; it is in the dead-letter topic and the partition goes on",
				"partition", m.Partition, "offset", m.Offset, "attempts", p.Attempts, "deadLetterTopic", o.DeadLetterTopic)
			return
		}
		logger.Info("the app refused a replayed message on every attempt; passed over (the live member dead-lettered it)",
			"partition", m.Partition, "offset", m.Offset, "attempts", p.Attempts, "error", p.Err.Error())
	}
	e.OnQuiesceError = func(err error) {
		logger.Info("paused for a checkpoint; the app did not confirm it closed its connections (a connection still open fails the checkpoint)", "error", err.Error())
	}
	e.OnRewind = func(p int, from, to int64, delivered int) {
		logger.Info("the app lost state (it restarted from its image); gave it the messages it missed as replay",
			"partition", p, "from", from, "to", to, "delivered", delivered)
	}

	ctl := &Control{Engine: e, Auth: auth, AllowedUsers: sets.New(o.AllowedUsers...), NodeAgents: sets.New(o.NodeAgents...), Node: o.Node, Metrics: metrics}
	metricsMux := http.NewServeMux()
	metricsMux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	servers := []*http.Server{newServer(o.ControlAddr, ctl.Handler()), newServer(o.MetricsAddr, metricsMux)}
	errc := make(chan error, len(servers)+1)
	for _, s := range servers {
		l, err := net.Listen("tcp", s.Addr)
		if err != nil {
			return fmt.Errorf("listening on %s: %w", s.Addr, err)
		}
		go func() {
			if err := s.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	engine := make(chan error, 1)
	go func() { engine <- e.Run(runCtx) }()
	var err error
	stopped := false
	select {
	case <-ctx.Done():
	case err = <-errc:
	case err = <-engine:
		stopped = true
	}
	cancel()
	shutdown, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	for _, s := range servers {
		_ = s.Shutdown(shutdown)
	}
	// Wait for the engine to leave the consumer group (it closes its
	// reader): exiting before would leave the group to the broker's
	// session timeout, and the next member would wait out a rebalance.
	if !stopped {
		select {
		case eerr := <-engine:
			if err == nil {
				err = eerr
			}
		case <-shutdown.Done():
		}
	}
	return err
}

// Timeouts of the sidecar's servers: a client that stalls or idles holds a
// connection (and its buffers) this long at most. A control call may wait
// longer, up to its timeoutSeconds: Control extends the deadlines of its
// connection for it.
const (
	serverReadHeaderTimeout = 5 * time.Second
	serverReadTimeout       = 10 * time.Second
	serverWriteTimeout      = DefaultCallTimeout + callSlack
	serverIdleTimeout       = 60 * time.Second
)

func newServer(addr string, h http.Handler) *http.Server {
	return &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: serverReadHeaderTimeout,
		ReadTimeout: serverReadTimeout, WriteTimeout: serverWriteTimeout, IdleTimeout: serverIdleTimeout}
}
