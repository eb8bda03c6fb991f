package deploy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	migrationv1alpha1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// Sidecar is what a consumer's replay sidecar reports on its metrics
// endpoint (docs/sidecar.md) about its place in the consumer group.
type Sidecar struct {
	// Mode is the sidecar's current mode (live, replay, fenced, ...).
	Mode string
	// Generation is the group's generation at the sidecar's last join, and
	// Partitions the number it was assigned then: a replica whose
	// generation does not move was not rebalanced.
	Generation int64
	Partitions int
	// Delivered counts the messages the app acknowledged.
	Delivered int64
	// Pauses and Fences count the pause and fence requests the sidecar
	// served: a migration asks them only of the pod it moves.
	Pauses, Fences int64
	// Rewinds counts the app's requests for messages it lost (a restored
	// app restarted from its checkpoint image).
	Rewinds int64
}

func (s Sidecar) String() string {
	return fmt.Sprintf("%s, group generation %d, %d partitions, %d delivered", s.Mode, s.Generation, s.Partitions, s.Delivered)
}

// Sidecar reads the consumer's replay sidecar metrics.
func (d Deployed) Sidecar(ctx context.Context) (Sidecar, error) {
	port := "9902"
	for _, c := range d.Pod.Spec.Containers {
		for _, p := range c.Ports {
			if c.Name == migrationv1alpha1.SidecarContainerName && p.Name == "ms2m-metrics" {
				port = strconv.Itoa(int(p.ContainerPort))
			}
		}
	}
	return ReadSidecar(ctx, net.JoinHostPort(d.Pod.Status.PodIP, port))
}

// ReadSidecar reads a replay sidecar's metrics endpoint at addr (host:port).
func ReadSidecar(ctx context.Context, addr string) (Sidecar, error) {
	url := "http://" + addr + "/metrics"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Sidecar{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Sidecar{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return Sidecar{}, fmt.Errorf("%s: %s", url, resp.Status)
	}
	var s Sidecar
	seen := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		f, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		switch name {
		case "ms2m_replay_group_generation":
			s.Generation, seen = int64(f), seen+1
		case "ms2m_replay_assigned_partitions":
			s.Partitions, seen = int(f), seen+1
		case "ms2m_replay_messages_delivered_total":
			s.Delivered, seen = int64(f), seen+1
		case "ms2m_replay_pause_duration_seconds_count":
			s.Pauses = int64(f)
		case "ms2m_replay_fence_duration_seconds_count":
			s.Fences = int64(f)
		case "ms2m_replay_rewinds_total":
			s.Rewinds = int64(f)
		default:
			if m, ok := strings.CutPrefix(name, `ms2m_replay_mode{mode="`); ok && f == 1 {
				s.Mode = strings.TrimSuffix(m, `"}`)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return Sidecar{}, fmt.Errorf("%s: %w", url, err)
	}
	if seen < 3 || s.Mode == "" {
		return Sidecar{}, fmt.Errorf("%s: no mode, group generation, assigned partitions or delivered count", url)
	}
	return s, nil
}

// WaitGroup waits until the consumer group has settled over the replicas
// ds: every one joined at the same generation and was given partitions of
// its own (partitions in all, when more than 0). Messages produced before
// that may be consumed by a replica and then again by the one the next
// rebalance gives its partition, so a producer starts after it. It returns
// each replica's sidecar as of then.
func WaitGroup(ctx context.Context, ds []Deployed, partitions int) ([]Sidecar, error) {
	out := make([]Sidecar, len(ds))
	err := poll(ctx, 2*time.Minute, func(ctx context.Context) error {
		total := 0
		for i, d := range ds {
			s, err := d.Sidecar(ctx)
			if err != nil {
				return err
			}
			switch {
			case s.Generation == 0 || s.Partitions == 0:
				return fmt.Errorf("pod %s has not joined the group with partitions yet (%s)", d.Pod.Name, s)
			case s.Generation != out[0].Generation && i > 0:
				return fmt.Errorf("pod %s joined generation %d, pod %s generation %d", d.Pod.Name, s.Generation, ds[0].Pod.Name, out[0].Generation)
			}
			out[i], total = s, total+s.Partitions
		}
		if partitions > 0 && total != partitions {
			return fmt.Errorf("the replicas hold %d of the topic's %d partitions", total, partitions)
		}
		return nil
	})
	return out, err
}

// CreateTopic creates topic with the given number of partitions; a topic
// that already exists is left as it is.
func CreateTopic(ctx context.Context, brokers []string, topic string, partitions int) error {
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	resp, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
		{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1}}})
	if err != nil {
		return fmt.Errorf("creating topic %s: %w", topic, err)
	}
	if err := resp.Errors[topic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("creating topic %s: %w", topic, err)
	}
	return nil
}
