package statefulapp

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/segmentio/kafka-go"
)

// ReadTopic reads every record of topic currently in the log, in offset
// order per partition, as a standalone reader (no consumer group).
func ReadTopic(ctx context.Context, brokers []string, topic string) ([]Record, error) {
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	meta, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata of %s: %w", topic, err)
	}
	if len(meta.Topics) != 1 || meta.Topics[0].Error != nil {
		return nil, fmt.Errorf("topic %s: not found", topic)
	}
	var reqs []kafka.OffsetRequest
	for _, p := range meta.Topics[0].Partitions {
		reqs = append(reqs, kafka.FirstOffsetOf(p.ID), kafka.LastOffsetOf(p.ID))
	}
	offs, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("offsets of %s: %w", topic, err)
	}
	var out []Record
	for _, po := range offs.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("offsets of %s/%d: %w", topic, po.Partition, po.Error)
		}
		recs, err := readPartition(ctx, brokers, topic, po.Partition, po.FirstOffset, po.LastOffset)
		if err != nil {
			return nil, err
		}
		out = append(out, recs...)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Partition != out[j].Partition {
			return out[i].Partition < out[j].Partition
		}
		return out[i].Offset < out[j].Offset
	})
	return out, nil
}

func readPartition(ctx context.Context, brokers []string, topic string, partition int, first, end int64) ([]Record, error) {
	if first >= end {
		return nil, nil
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: partition, MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 100 * time.Millisecond})
	defer func() { _ = r.Close() }()
	if err := r.SetOffset(first); err != nil {
		return nil, err
	}
	out := make([]Record, 0, end-first)
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading %s/%d at %d: %w", topic, partition, first+int64(len(out)), err)
		}
		seq, err := ParseSeq(m.Value)
		if err != nil {
			return nil, fmt.Errorf("%s/%d@%d: %w", topic, partition, m.Offset, err)
		}
		out = append(out, Record{Partition: partition, Offset: m.Offset, Key: string(m.Key), Seq: seq})
		if m.Offset >= end-1 {
			return out, nil
		}
	}
}

// EffectWriter publishes one record per live-processed message to the
// effects topic: the app's observable side effect, which the verifier
// checks for gaps and duplicates.
type EffectWriter struct {
	w  *kafka.Writer
	tr *kafka.Transport
}

// NewEffectWriter writes to topic on brokers.
func NewEffectWriter(brokers []string, topic string) *EffectWriter {
	tr := &kafka.Transport{}
	return &EffectWriter{tr: tr, w: &kafka.Writer{
		Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{}, Transport: tr,
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, AllowAutoTopicCreation: true,
	}}
}

// CloseConnections closes the writer's broker connections (they are
// reopened by the next write): the app's part of a checkpoint, which CRIU
// refuses while a TCP connection is open.
func (e *EffectWriter) CloseConnections() { e.tr.CloseIdleConnections() }

// Warm opens the writer's broker connection and reads the effects topic's
// metadata ahead of the next write, which would otherwise dial first: after
// a quiesce (the checkpoint), the first live effect, on the source after
// its resume and on the restored target after its handover, pays that on
// the migration's stall.
func (e *EffectWriter) Warm(ctx context.Context) error {
	_, err := (&kafka.Client{Addr: e.w.Addr, Transport: e.tr}).Metadata(ctx, &kafka.MetadataRequest{Topics: []string{e.w.Topic}})
	return err
}

// Write publishes r synchronously.
func (e *EffectWriter) Write(ctx context.Context, r Record) error {
	err := e.w.WriteMessages(ctx, kafka.Message{Key: []byte(r.Key), Value: fmt.Appendf(nil, "%d", r.Seq)})
	if err != nil {
		return fmt.Errorf("publishing the effect of seq %d: %w", r.Seq, err)
	}
	return nil
}

// Close flushes and closes the writer.
func (e *EffectWriter) Close() error { return e.w.Close() }
