package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ms2m/ms2m/examples/statefulapp"
	"github.com/ms2m/ms2m/internal/example/deploy"
)

// partitions of every trial's topics (the sandbox broker's default).
const partitions = 2

// method is one way of moving the consumer to another node.
type method struct {
	Name string
	// SlowReplay: the consumer replays at the cutoff regime's cost.
	SlowReplay bool
	// Move moves the consumer pod src to node target and returns once the
	// moved consumer processes live.
	Move func(ctx context.Context, t *trial, src *corev1.Pod, target string) (moved, error)
}

// moved is what a method reports about one move.
type moved struct {
	// Pod is the consumer's pod afterwards.
	Pod string
	// Phases in order, as the method defines them.
	Phases []span
	// ControllerDowntime is what the controller recorded (MS2M only).
	ControllerDowntime time.Duration
	// Cutover is why the replay ended (MS2M only).
	Cutover string
	// HandedOver is the HandedOver condition's message: where the
	// handover went (MS2M only; logged, not in the CSV).
	HandedOver string
	// Pause and Handover are when MS2M's source was paused for the
	// checkpoint (from the request to Transferring) and when it handed
	// over (Finalizing to Completed), on the controller's clock (the
	// manager runs in this process: the same clock).
	Pause, Handover [2]time.Time
	// Frozen is how long the source's runtime held the app container for
	// the checkpoint, as the node agent saw its cgroup (MS2M, when the
	// agent resumed the sidecar at the thaw); Checkpoint is the agent's
	// report of the pause's steps (logged).
	Frozen     time.Duration
	Checkpoint string
}

type span struct {
	Name     string
	Duration time.Duration
}

// trial is one migration of a freshly deployed consumer under load.
type trial struct {
	b      *bench
	ns     string
	e      deploy.Example
	method method
}

// run deploys the example in its own namespace, produces at the trial's
// rate, moves the consumer after the warm-up, waits until every message
// was processed, and measures. Errors end up in the result, not in the
// benchmark: one failed trial is a figure too.
func (t *trial) run(ctx context.Context, rate float64, run int) result {
	r := result{Rate: rate, Run: run, Method: t.method.Name}
	err := t.measure(ctx, &r)
	if err != nil {
		r.Err = err.Error()
	}
	return r
}

func (t *trial) measure(ctx context.Context, r *result) error {
	b := t.b
	ns, err := b.namespace(ctx, fmt.Sprintf("bench-%s-%g-%d-", t.method.Name, r.Rate, r.Run))
	if err != nil {
		return err
	}
	t.ns = ns
	defer func() { b.cleanup(ns, t.e) }()
	t.e = deploy.Example{
		// A group of its own: the previous trial's deleted static member
		// would hold a shared group's next join for the rebalance timeout.
		Name: "orders", Group: ns + "-orders", Brokers: []string{b.sb.Broker}, Topic: ns + "-orders",
		ProcessTime: b.opts.ProcessTime, Rate: r.Rate, Count: int64(r.Rate * b.opts.Duration.Seconds()), Bare: true,
	}
	if t.method.SlowReplay {
		t.e.ReplayProcessTime = b.opts.RegimeReplayTime
	}
	r.Input = int(t.e.Count)
	if err := createTopics(ctx, t.e.Brokers, t.e.Topic, t.e.Effects()); err != nil {
		return err
	}
	obs := observe(ctx, t.e.Brokers, t.e.Topic, t.e.Effects(), partitions)
	defer func() { _, _, _ = obs.stop() }()
	quiet := func(string, ...any) {}
	d, err := deploy.DeployConsumer(ctx, b.sb.Client, ns, t.e, quiet)
	if err != nil {
		return fmt.Errorf("deploying the consumer: %w", err)
	}
	if err := deploy.StartProducer(ctx, b.sb.Client, ns, t.e, quiet); err != nil {
		return err
	}
	warm := int(r.Rate * b.opts.Warmup.Seconds())
	if err := poll(ctx, b.opts.Warmup+2*time.Minute, func(context.Context) error {
		if n := obs.producedCount(); n < warm {
			return fmt.Errorf("warm-up: %d of %d messages produced", n, warm)
		}
		return nil
	}); err != nil {
		return err
	}
	target, err := b.otherNode(ctx, d.Pod.Spec.NodeName)
	if err != nil {
		return err
	}

	start := time.Now()
	mctx, cancel := context.WithTimeout(ctx, b.opts.MoveTimeout)
	m, err := t.method.Move(mctx, t, d.Pod, target)
	cancel()
	end := time.Now()
	if err != nil {
		return fmt.Errorf("%s: %w", t.method.Name, err)
	}
	r.Total, r.Phases, r.ControllerDowntime, r.Cutover, r.handedOver = end.Sub(start), m.Phases, m.ControllerDowntime, m.Cutover, m.HandedOver
	r.Frozen, r.checkpoint = m.Frozen, m.Checkpoint

	if err := deploy.WaitProducer(ctx, b.sb.Client, ns, t.e); err != nil {
		return err
	}
	url, err := b.podURL(ctx, ns, m.Pod)
	if err != nil {
		return err
	}
	drain := time.Duration(float64(t.e.Count)*b.opts.ProcessTime.Seconds()*2*float64(time.Second)) + time.Minute
	if err := poll(ctx, drain, func(ctx context.Context) error {
		s, err := statefulapp.FetchSummary(ctx, url)
		if err != nil {
			return err
		}
		if s.Applied < t.e.Count {
			return fmt.Errorf("draining: the consumer applied %d of %d messages", s.Applied, t.e.Count)
		}
		return nil
	}); err != nil {
		return err
	}
	v, err := deploy.Verify(ctx, t.e, url, 30*time.Second)
	if err != nil {
		return err
	}
	r.Lost, r.Duplicated, r.Unexpected = len(v.Missing), len(v.Duplicated), len(v.Unexpected)
	r.StateOK = v.StateDigest == v.WantDigest
	s, err := statefulapp.FetchSummary(ctx, url)
	if err != nil {
		return err
	}
	r.Replayed = s.Replayed

	produced, effects, oerr := obs.stop()
	if oerr != nil {
		return oerr
	}
	g, err := measure(produced, effects, start, end, r.Lost == 0 && len(produced) == r.Input)
	r.Downtime, r.MaxGap, r.Service, r.downtimeAt = g.Downtime, g.MaxGap, g.Service, g.At
	if err != nil {
		return err
	}
	stall := func(w [2]time.Time) time.Duration {
		if w[0].IsZero() {
			return 0
		}
		g, _ := measure(produced, effects, w[0], w[1], true)
		return g.Downtime
	}
	r.PauseStall, r.HandoverStall = stall(m.Pause), stall(m.Handover)
	if !m.Pause[0].IsZero() {
		// MS2M stalls twice; a user waits through both.
		r.Downtime = r.PauseStall + r.HandoverStall
	}
	return nil
}

// createTopics creates the trial's topics up front, so the observer can
// tail them before the first record.
func createTopics(ctx context.Context, brokers []string, topics ...string) error {
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	req := &kafka.CreateTopicsRequest{}
	for _, t := range topics {
		req.Topics = append(req.Topics, kafka.TopicConfig{Topic: t, NumPartitions: partitions, ReplicationFactor: 1})
	}
	resp, err := c.CreateTopics(ctx, req)
	if err != nil {
		return fmt.Errorf("creating topics %v: %w", topics, err)
	}
	for t, err := range resp.Errors {
		if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
			return fmt.Errorf("creating topic %s: %w", t, err)
		}
	}
	return nil
}

// committedOffsets are the consumer group's committed offsets per
// partition (0 where it has committed none).
func committedOffsets(ctx context.Context, brokers []string, topic, group string) (map[int]int64, error) {
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	ps := make([]int, partitions)
	for i := range ps {
		ps[i] = i
	}
	resp, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: ps}})
	if err != nil {
		return nil, fmt.Errorf("committed offsets of group %s: %w", group, err)
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("committed offsets of group %s: %w", group, resp.Error)
	}
	out := map[int]int64{}
	for _, p := range ps {
		out[p] = 0
	}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("committed offset of %s/%d: %w", topic, p.Partition, p.Error)
		}
		out[p.Partition] = max(p.CommittedOffset, 0)
	}
	return out, nil
}

// podURL is the consumer's base URL in pod name.
func (b *bench) podURL(ctx context.Context, ns, name string) (string, error) {
	p, err := b.sb.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	return "http://" + net.JoinHostPort(p.Status.PodIP, "8080"), nil
}

// otherNode is the first Ready node, by name, other than node.
func (b *bench) otherNode(ctx context.Context, node string) (string, error) {
	nodes, err := b.sb.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", err
	}
	var names []string
	for _, n := range nodes.Items {
		if n.Name == node || n.Spec.Unschedulable {
			continue
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				names = append(names, n.Name)
			}
		}
	}
	if len(names) == 0 {
		return "", fmt.Errorf("no Ready node other than %s", node)
	}
	slices.Sort(names)
	return names[0], nil
}

// namespace creates a namespace and waits for its default service account
// (the producer Job's pods need it).
func (b *bench) namespace(ctx context.Context, prefix string) (string, error) {
	prefix = strings.ReplaceAll(prefix, ".", "-")
	ns, err := b.sb.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix}}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return ns.Name, poll(ctx, time.Minute, func(ctx context.Context) error {
		_, err := b.sb.Client.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

// cleanup deletes a trial's namespace and waits until it is gone, so the
// next trial runs on an idle sandbox.
func (b *bench) cleanup(ns string, e deploy.Example) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := b.sb.Client
	if err := c.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		b.logf("deleting namespace %s: %v", ns, err)
		return
	}
	if err := poll(ctx, 3*time.Minute, func(ctx context.Context) error {
		_, err := c.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("namespace %s still there (%v)", ns, err)
	}); err != nil {
		b.logf("%v", err)
	}
}

// poll is deploy.Poll every 50 ms.
func poll(ctx context.Context, timeout time.Duration, fn func(context.Context) error) error {
	return deploy.Poll(ctx, 50*time.Millisecond, timeout, fn)
}
