package replay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// Kafka is Sources for one topic and consumer group on a Kafka cluster.
type Kafka struct {
	Brokers []string
	Topic   string
	Group   string
	// MaxWait bounds how long a fetch waits for new messages (latency).
	MaxWait time.Duration
	// InstanceID, when set, makes the live source a static member of the
	// group (group.instance.id, KIP-345) with this id; see static.
	InstanceID string
	// OnJoin, when set, hears each join of the static member.
	OnJoin func(generation int, assigned []int)
	// DeadLetterTopic receives the messages the app refused for good
	// (default: DefaultDeadLetterTopic of Topic).
	DeadLetterTopic string
	// BufferBytes bounds what the replay source and the static member
	// hold of fetched messages the engine has not taken, over all
	// partitions (default DefaultBufferBytes; a fetch may exceed it by one
	// record batch larger than the rest of the room).
	BufferBytes int64

	client *kafka.Client
	tr     *kafka.Transport
	buf    *budget
	poll   *committedPoller
	once   sync.Once
	dlq    *kafka.Writer
}

// DefaultDeadLetterTopic is the dead-letter topic of topic unless
// ms2m.io/dead-letter-topic names another.
func DefaultDeadLetterTopic(topic string) string { return topic + ".ms2m-dead-letter" }

// Headers a dead-lettered record carries besides the original's.
const (
	DeadLetterHeaderTopic     = "ms2m.dead-letter.topic"
	DeadLetterHeaderPartition = "ms2m.dead-letter.partition"
	DeadLetterHeaderOffset    = "ms2m.dead-letter.offset"
	DeadLetterHeaderGroup     = "ms2m.dead-letter.group"
	DeadLetterHeaderReason    = "ms2m.dead-letter.reason"
)

// metadataTTL is how stale the transport's cached metadata may be.
const metadataTTL = 500 * time.Millisecond

// transport is this Kafka's own connection pool: kafka-go's default one is
// shared by every client of the process and keeps what it learned of a
// broker (its coordinator, its metadata) by address, so a second broker on
// a reused address was taken for the first.
func (k *Kafka) transport() *kafka.Transport {
	k.once.Do(func() {
		// kafka-go answers Metadata from this cache, refreshed every
		// MetadataTTL (6 s by default): a topic created meanwhile (the
		// producer's first write creates it) would stay unknown that long.
		k.tr = &kafka.Transport{MetadataTTL: metadataTTL}
		k.client = &kafka.Client{Addr: kafka.TCP(k.Brokers...), Timeout: 10 * time.Second, Transport: k.tr}
		dlq := k.DeadLetterTopic
		if dlq == "" {
			dlq = DefaultDeadLetterTopic(k.Topic)
		}
		// One record at a time, acknowledged by every in-sync replica
		// before the original's offset is committed.
		k.dlq = &kafka.Writer{Addr: kafka.TCP(k.Brokers...), Topic: dlq, Transport: k.tr, RequiredAcks: kafka.RequireAll,
			BatchSize: 1, BatchTimeout: time.Millisecond, AllowAutoTopicCreation: true, WriteTimeout: 10 * time.Second}
		limit := k.BufferBytes
		if limit <= 0 {
			limit = DefaultBufferBytes
		}
		k.buf = newBudget(limit)
		k.poll = &committedPoller{committed: k.Committed, interval: k.maxWait() / 5, closely: caughtUpPoll}
	})
	return k.tr
}

func (k *Kafka) buffer() *budget {
	k.transport()
	return k.buf
}

func (k *Kafka) kafkaClient() *kafka.Client {
	k.transport()
	return k.client
}

func (k *Kafka) maxWait() time.Duration {
	if k.MaxWait > 0 {
		return k.MaxWait
	}
	return 50 * time.Millisecond
}

// Live implements Sources: a group member that commits synchronously, a
// static one when InstanceID is set.
func (k *Kafka) Live() Source {
	if k.InstanceID != "" {
		return k.static()
	}
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers: k.Brokers, Topic: k.Topic, GroupID: k.Group,
		// A small queue and fetch: each partition's reader holds at most
		// a fetch and a message (see pump for the static member, which
		// shares one budget across partitions).
		MinBytes: 1, MaxBytes: fetchBytes, MaxWait: k.maxWait(), QueueCapacity: 1,
		StartOffset:       kafka.FirstOffset,
		CommitInterval:    0, // synchronous: a commit returns once stored
		HeartbeatInterval: time.Second, SessionTimeout: 10 * time.Second, RebalanceTimeout: 5 * time.Second,
	})
}

// Replay implements Sources: one fetch loop per partition (see pump).
// Each partition holds back a message until the live member has committed
// past it, so a caught-up partition never blocks the others.
func (k *Kafka) Replay(from map[int]int64) Source {
	return k.pumps(from, k.waitCommittedPast)
}

// Read implements Sources: a standalone reader of one partition.
func (k *Kafka) Read(partition int, from int64) Source {
	return k.pumps(map[int]int64{partition: from}, nil)
}

// pumps reads the partitions of from, each from its offset (see pump).
func (k *Kafka) pumps(from map[int]int64, wait func(context.Context, int, int64) (int64, error)) *merged {
	ctx, cancel := context.WithCancel(context.Background())
	m := &merged{out: make(chan fetched), closed: ctx.Done(), cancel: cancel}
	for p, off := range from {
		m.wg.Add(1)
		go m.pump(ctx, k, p, off, wait)
	}
	return m
}

// DeadLetter implements Sources: the record as it was (key, value,
// headers) with headers naming where it came from and why it was refused.
func (k *Kafka) DeadLetter(ctx context.Context, m kafka.Message, cause error) error {
	k.transport()
	reason := cause.Error()
	if len(reason) > 1024 {
		reason = reason[:1024]
	}
	headers := append(slices.Clip(m.Headers),
		kafka.Header{Key: DeadLetterHeaderTopic, Value: []byte(m.Topic)},
		kafka.Header{Key: DeadLetterHeaderPartition, Value: []byte(strconv.Itoa(m.Partition))},
		kafka.Header{Key: DeadLetterHeaderOffset, Value: []byte(strconv.FormatInt(m.Offset, 10))},
		kafka.Header{Key: DeadLetterHeaderGroup, Value: []byte(k.Group)},
		kafka.Header{Key: DeadLetterHeaderReason, Value: []byte(reason)})
	return k.dlq.WriteMessages(ctx, kafka.Message{Key: m.Key, Value: m.Value, Headers: headers, Time: m.Time})
}

// Committed implements Sources.
func (k *Kafka) Committed(ctx context.Context) (map[int]int64, error) {
	c := k.kafkaClient()
	meta, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{k.Topic}})
	// A topic the cached metadata does not know yet may have just been
	// created: wait for the cache's next refresh or two before saying so.
	for i := 0; err == nil && (len(meta.Topics) != 1 || meta.Topics[0].Error != nil) && i < 3; i++ {
		if !sleepCtx(ctx, metadataTTL) {
			return nil, ctx.Err()
		}
		meta, err = c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{k.Topic}})
	}
	if err != nil {
		return nil, err
	}
	if len(meta.Topics) != 1 || meta.Topics[0].Error != nil {
		return nil, fmt.Errorf("topic %s: no metadata", k.Topic)
	}
	var parts []int
	for _, p := range meta.Topics[0].Partitions {
		parts = append(parts, p.ID)
	}
	resp, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: k.Group, Topics: map[string][]int{k.Topic: parts}})
	if err != nil {
		return nil, err
	}
	if errors.Is(resp.Error, kafka.GroupIdNotFound) {
		// A group that never committed (newer brokers say so instead of
		// answering -1 per partition): nothing committed yet.
		out := make(map[int]int64, len(parts))
		for _, p := range parts {
			out[p] = 0
		}
		return out, nil
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	out := make(map[int]int64, len(parts))
	for _, p := range resp.Topics[k.Topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("partition %d: %w", p.Partition, p.Error)
		}
		out[p.Partition] = max(p.CommittedOffset, 0)
	}
	return out, nil
}

type fetched struct {
	m   kafka.Message
	err error
}

// merged reads several partitions; order within each partition is kept.
type merged struct {
	out    chan fetched
	closed <-chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (m *merged) FetchMessage(ctx context.Context) (kafka.Message, error) {
	select {
	case f := <-m.out:
		return f.m, f.err
	case <-m.closed:
		return kafka.Message{}, errors.New("replay source closed")
	case <-ctx.Done():
		return kafka.Message{}, ctx.Err()
	}
}

// CommitMessages does nothing: replay never commits for the group.
func (m *merged) CommitMessages(context.Context, ...kafka.Message) error { return nil }

func (m *merged) Close() error {
	m.cancel()
	m.wg.Wait()
	return nil
}
