package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ms2m/ms2m/internal/example/deploy"
	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/replay"
)

// cold is the baseline: stop the consumer, then start it afresh on the
// target node from its original image and rebuild its state from the
// topic. Exactly:
//
//  1. Stopping: the source's sidecar stops after its in-flight message
//     and leaves the consumer group (the control API's pause, then its
//     fence: standing in for a consumer that leaves its group on
//     shutdown — ms2m-replay does not yet do so on SIGTERM, and a member
//     that just vanishes makes the next one wait out the group's 5 s
//     rebalance timeout, which would flatter MS2M; the pause comes first
//     because a fence alone waits for an idle moment, which a busy
//     consumer may not have for seconds); then the pod is deleted (its
//     grace period as configured) and the benchmark waits until the API
//     server no longer has it. The sidecar committed every acknowledged
//     offset, so the group's commits are where the state stood.
//  2. Starting: create a pod from the same spec, pinned to the target node
//     by node affinity, whose replay sidecar (injected by the webhook as
//     for any migratable pod) starts in replay mode from offset 0 of every
//     partition: the app sees the whole topic again, marked as replay, so
//     it rebuilds its state and suppresses the effects. Ends when the
//     sidecar's control API answers.
//  3. Rebuilding: hand over at the group's committed offsets — the same
//     sidecar call the controller makes at a fence — which replays to
//     exactly there and then consumes live as the group member. Ends when
//     the sidecar is live.
//
// Nothing is lost or processed live twice, so the baseline is as correct
// as MS2M; it differs only in that no instance processes live from the
// deletion until the rebuild is done.
var cold = method{Name: "cold", Move: moveCold}

func moveCold(ctx context.Context, t *trial, src *corev1.Pod, target string) (moved, error) {
	c := t.b.sb.Client
	pods := c.CoreV1().Pods(t.ns)
	sidecars := &replay.Client{Token: t.b.tokens.Token}
	t0 := time.Now()
	srcAddr := replay.EndpointOf(src.Status.PodIP, 9901, src.Namespace, string(src.UID))
	if _, err := sidecars.Pause(ctx, srcAddr); err != nil {
		return moved{}, fmt.Errorf("stopping the source's delivery: %w", err)
	}
	if _, err := sidecars.Fence(ctx, srcAddr); err != nil {
		return moved{}, fmt.Errorf("taking the source out of the group: %w", err)
	}
	if err := pods.Delete(ctx, src.Name, metav1.DeleteOptions{}); err != nil {
		return moved{}, fmt.Errorf("deleting the source: %w", err)
	}
	if err := poll(ctx, 2*time.Minute, func(ctx context.Context) error {
		_, err := pods.Get(ctx, src.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("source pod %s still there (%v)", src.Name, err)
	}); err != nil {
		return moved{}, err
	}
	t1 := time.Now()

	p, err := coldPod(t.e, target)
	if err != nil {
		return moved{}, err
	}
	if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
		return moved{}, fmt.Errorf("creating the cold pod: %w", err)
	}
	var addr replay.Endpoint
	if err := poll(ctx, 2*time.Minute, func(ctx context.Context) error {
		p, err := pods.Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.PodIP == "" {
			return fmt.Errorf("cold pod %s is %s without an IP", p.Name, p.Status.Phase)
		}
		addr = replay.EndpointOf(p.Status.PodIP, 9901, p.Namespace, string(p.UID))
		_, err = sidecars.Position(ctx, addr)
		return err
	}); err != nil {
		return moved{}, err
	}
	t2 := time.Now()

	fence, err := committedOffsets(ctx, t.e.Brokers, t.e.Topic, t.e.GroupName())
	if err != nil {
		return moved{}, err
	}
	if _, err := sidecars.Handover(ctx, addr, fence); err != nil {
		return moved{}, fmt.Errorf("handover at %v: %w", fence, err)
	}
	t3 := time.Now()
	return moved{Pod: p.Name, Phases: []span{
		{Name: "Stopping", Duration: t1.Sub(t0)},
		{Name: "Starting", Duration: t2.Sub(t1)},
		{Name: "Rebuilding", Duration: t3.Sub(t2)},
	}}, nil
}

// coldPod is the consumer's bare pod, renamed, pinned to node, its replay
// sidecar set to replay every partition from offset 0 (the webhook
// replaces the container with the full sidecar and keeps that setting).
func coldPod(e deploy.Example, node string) (*corev1.Pod, error) {
	p := e.BarePod()
	p.Name = e.Name + "-cold"
	p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{node}}},
		}}},
	}}
	from := map[string]int64{}
	for i := range partitions {
		from[strconv.Itoa(i)] = 0
	}
	b, err := json.Marshal(from)
	if err != nil {
		return nil, err
	}
	p.Spec.Containers = append(p.Spec.Containers, corev1.Container{
		Name: v1.SidecarContainerName, Image: deploy.Image,
		Env: []corev1.EnvVar{{Name: replay.EnvReplayFrom, Value: string(b)}},
	})
	return p, nil
}
