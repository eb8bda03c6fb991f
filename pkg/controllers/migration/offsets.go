package migration

import (
	"context"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ms2m/ms2m/pkg/migratable"
)

// Offsets completes a paused sidecar's position: partitions it has not
// delivered from yet (none assigned, or no message yet) start, for the
// app's memory, at the group's committed offset, or the log's start when
// the group never committed.
type Offsets interface {
	Complete(ctx context.Context, b migratable.Binding, next map[int]int64) (map[int]int64, error)
}

// KafkaOffsets asks the brokers (segmentio/kafka-go).
type KafkaOffsets struct{}

// Complete implements Offsets.
func (KafkaOffsets) Complete(ctx context.Context, b migratable.Binding, next map[int]int64) (map[int]int64, error) {
	c := &kafka.Client{Addr: kafka.TCP(b.Brokers...), Timeout: 10 * time.Second}
	meta, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{b.Topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata of topic %s: %w", b.Topic, err)
	}
	if len(meta.Topics) != 1 || meta.Topics[0].Error != nil {
		// The topic does not exist yet: nothing was consumed, the target
		// starts where the source would.
		return next, nil
	}
	var missing []int
	for _, p := range meta.Topics[0].Partitions {
		if _, ok := next[p.ID]; !ok {
			missing = append(missing, p.ID)
		}
	}
	if len(missing) == 0 {
		return next, nil
	}
	out := make(map[int]int64, len(next)+len(missing))
	for p, o := range next {
		out[p] = o
	}
	committed, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: b.Group, Topics: map[string][]int{b.Topic: missing}})
	if err != nil {
		return nil, fmt.Errorf("committed offsets of group %s: %w", b.Group, err)
	}
	var first []kafka.OffsetRequest
	for _, p := range committed.Topics[b.Topic] {
		if p.CommittedOffset >= 0 {
			out[p.Partition] = p.CommittedOffset
		} else {
			first = append(first, kafka.FirstOffsetOf(p.Partition))
		}
	}
	if len(first) > 0 {
		offs, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{b.Topic: first}})
		if err != nil {
			return nil, fmt.Errorf("first offsets of %s: %w", b.Topic, err)
		}
		for _, p := range offs.Topics[b.Topic] {
			out[p.Partition] = p.FirstOffset
		}
	}
	return out, nil
}
