package deploy

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/ms2m/ms2m/examples/statefulapp"
	migrationv1alpha1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// Progress reports what Run is doing.
type Progress func(format string, args ...any)

// Deployed is the running consumer.
type Deployed struct {
	Pod *corev1.Pod
}

// URL is the consumer's base URL.
func (d Deployed) URL() string { return "http://" + net.JoinHostPort(d.Pod.Status.PodIP, "8080") }

// DeployConsumer is DeployConsumers, returning the first replica (the
// only one, unless e.Replicas asks for several).
func DeployConsumer(ctx context.Context, c kubernetes.Interface, ns string, e Example, say Progress) (Deployed, error) {
	ds, err := DeployConsumers(ctx, c, ns, e, say)
	if err != nil {
		return Deployed{}, err
	}
	return ds[0], nil
}

// DeployConsumers creates the consumer (a Deployment, a StatefulSet when
// e.StatefulSet, or a bare pod when e.Bare), after its topic when
// e.Partitions asks for one, and waits until its e.ReplicaCount() pods are
// Ready with the replay sidecar injected; with several replicas, also until
// the consumer group has given each its partitions (WaitGroup).
func DeployConsumers(ctx context.Context, c kubernetes.Interface, ns string, e Example, say Progress) ([]Deployed, error) {
	n := e.ReplicaCount()
	if e.Bare && n > 1 {
		return nil, fmt.Errorf("a bare consumer pod is one replica, not %d", n)
	}
	if e.Partitions > 0 {
		if err := CreateTopic(ctx, e.Brokers, e.Topic, e.Partitions); err != nil {
			return nil, err
		}
		say("created topic %s with %d partitions", e.Topic, e.Partitions)
	}
	if _, err := c.CoreV1().ServiceAccounts(ns).Create(ctx, e.ServiceAccount(), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	var err error
	switch {
	case e.Bare:
		_, err = c.CoreV1().Pods(ns).Create(ctx, e.BarePod(), metav1.CreateOptions{})
	case e.StatefulSet:
		_, err = c.AppsV1().StatefulSets(ns).Create(ctx, e.ConsumerStatefulSet(), metav1.CreateOptions{})
	default:
		_, err = c.AppsV1().Deployments(ns).Create(ctx, e.Consumer(), metav1.CreateOptions{})
	}
	if err != nil {
		return nil, err
	}
	if n == 1 {
		say("deployed consumer %s/%s (migratable; the webhook injects the replay sidecar)", ns, e.Name)
	} else {
		say("deployed consumer %s/%s: %d replicas in consumer group %s (migratable; the webhook injects the replay sidecar)", ns, e.Name, n, e.GroupName())
	}
	ds, err := FindConsumers(ctx, c, ns, e)
	if err != nil {
		return nil, err
	}
	if n == 1 {
		say("consumer pod %s Ready on %s at %s", ds[0].Pod.Name, ds[0].Pod.Spec.NodeName, ds[0].Pod.Status.PodIP)
		return ds, nil
	}
	sidecars, err := WaitGroup(ctx, ds, e.Partitions)
	if err != nil {
		return nil, err
	}
	for i, d := range ds {
		say("consumer pod %s Ready on %s at %s: %d partitions, group generation %d", d.Pod.Name, d.Pod.Spec.NodeName, d.Pod.Status.PodIP,
			sidecars[i].Partitions, sidecars[i].Generation)
	}
	return ds, nil
}

// FindConsumer is FindConsumers' first replica.
func FindConsumer(ctx context.Context, c kubernetes.Interface, ns string, e Example) (Deployed, error) {
	ds, err := FindConsumers(ctx, c, ns, e)
	if err != nil {
		return Deployed{}, err
	}
	return ds[0], nil
}

// FindConsumers waits until the consumer has exactly e.ReplicaCount() Ready
// pods with the replay sidecar injected, not counting pods being deleted or
// a migration's target before its handover, and returns them by name.
func FindConsumers(ctx context.Context, c kubernetes.Interface, ns string, e Example) ([]Deployed, error) {
	var found []Deployed
	err := poll(ctx, 2*time.Minute, func(ctx context.Context) error {
		pods, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(e.Labels()).String()})
		if err != nil {
			return err
		}
		found = nil
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.DeletionTimestamp != nil || p.Labels[migrationv1alpha1.LabelMigration] != "" {
				continue
			}
			if !hasSidecar(p) {
				return fmt.Errorf("pod %s has no %s sidecar: is the ms2m manager (its webhook) running?", p.Name, migrationv1alpha1.SidecarContainerName)
			}
			if !ready(p) {
				return fmt.Errorf("pod %s is %s, not Ready yet", p.Name, p.Status.Phase)
			}
			found = append(found, Deployed{Pod: p})
		}
		if len(found) != e.ReplicaCount() {
			return fmt.Errorf("%d consumer pods Ready, want %d", len(found), e.ReplicaCount())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(found, func(a, b Deployed) int { return strings.Compare(a.Pod.Name, b.Pod.Name) })
	return found, nil
}

// Produce runs the producer Job and waits for it to complete.
func Produce(ctx context.Context, c kubernetes.Interface, ns string, e Example, say Progress) error {
	if err := StartProducer(ctx, c, ns, e, say); err != nil {
		return err
	}
	return WaitProducer(ctx, c, ns, e)
}

// StartProducer starts the producer Job.
func StartProducer(ctx context.Context, c kubernetes.Interface, ns string, e Example, say Progress) error {
	if _, err := c.BatchV1().Jobs(ns).Create(ctx, e.Producer(), metav1.CreateOptions{}); err != nil {
		return err
	}
	say("producing %d messages at %g msg/s to %s", e.Count, e.Rate, e.Topic)
	return nil
}

// WaitProducer waits for the producer Job to complete.
func WaitProducer(ctx context.Context, c kubernetes.Interface, ns string, e Example) error {
	budget := time.Duration(float64(e.Count)/e.Rate*float64(time.Second)) + 2*time.Minute
	return poll(ctx, budget, func(ctx context.Context) error {
		j, err := c.BatchV1().Jobs(ns).Get(ctx, e.Name+"-producer", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if j.Status.Succeeded > 0 {
			return nil
		}
		return fmt.Errorf("producer job: %d active, %d failed", j.Status.Active, j.Status.Failed)
	})
}

// Verify waits (up to wait) until the consumer has processed every input
// message, then returns the zero-loss verdict: effects exactly once each,
// and the consumer's state equal to the fold of the input.
func Verify(ctx context.Context, e Example, consumerURL string, wait time.Duration) (statefulapp.Verdict, error) {
	return verify(ctx, e, []string{consumerURL}, wait)
}

// VerifyReplicas is Verify for a consumer of several replicas: the effects
// of all of them together exactly once each, and each replica's state the
// fold of the input of its partitions (statefulapp.VerifyReplicas).
func VerifyReplicas(ctx context.Context, e Example, replicas []Deployed, wait time.Duration) (statefulapp.Verdict, error) {
	urls := make([]string, len(replicas))
	for i, d := range replicas {
		urls[i] = d.URL()
	}
	return verify(ctx, e, urls, wait)
}

func verify(ctx context.Context, e Example, urls []string, wait time.Duration) (statefulapp.Verdict, error) {
	var v statefulapp.Verdict
	err := poll(ctx, wait, func(ctx context.Context) error {
		in, err := statefulapp.ReadTopic(ctx, e.Brokers, e.Topic)
		if err != nil {
			return err
		}
		out, err := statefulapp.ReadTopic(ctx, e.Brokers, e.Effects())
		if err != nil {
			return err
		}
		states := make([]statefulapp.Summary, len(urls))
		for i, u := range urls {
			if states[i], err = statefulapp.FetchSummary(ctx, u); err != nil {
				return err
			}
		}
		v = statefulapp.VerifyReplicas(in, out, states...)
		if !v.OK() {
			return fmt.Errorf("%s", v)
		}
		return nil
	})
	if v.Input == 0 && err != nil {
		return v, err
	}
	return v, nil
}

func hasSidecar(p *corev1.Pod) bool {
	for _, c := range p.Spec.Containers {
		if c.Name == migrationv1alpha1.SidecarContainerName {
			return true
		}
	}
	return false
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// poll is Poll every 200 ms.
func poll(ctx context.Context, timeout time.Duration, fn func(context.Context) error) error {
	return Poll(ctx, 200*time.Millisecond, timeout, fn)
}

// Poll runs fn every interval until it returns nil or timeout passes,
// returning fn's last error then (the one before, when the last call was
// cut short by the timeout itself, so the real reason shows).
func Poll(ctx context.Context, interval, timeout time.Duration, fn func(context.Context) error) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, interval, timeout, true, func(ctx context.Context) (bool, error) {
		e := fn(ctx)
		if e == nil || ctx.Err() == nil || last == nil {
			last = e
		}
		return e == nil, nil
	})
	if err != nil && last != nil {
		return last
	}
	return err
}

// WaitApplied waits until the consumer has applied at least n messages.
func WaitApplied(ctx context.Context, d Deployed, n int64) error {
	return WaitAppliedTotal(ctx, []Deployed{d}, n)
}

// WaitAppliedTotal waits until the replicas have applied at least n
// messages between them.
func WaitAppliedTotal(ctx context.Context, replicas []Deployed, n int64) error {
	return poll(ctx, 5*time.Minute, func(ctx context.Context) error {
		var applied int64
		for _, d := range replicas {
			s, err := statefulapp.FetchSummary(ctx, d.URL())
			if err != nil {
				return err
			}
			applied += s.Applied
		}
		if applied < n {
			return fmt.Errorf("consumer applied %d of %d messages", applied, n)
		}
		return nil
	})
}
