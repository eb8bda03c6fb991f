package replay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// static is a live Source that is a static member of the consumer group
// (KIP-345: group.instance.id), built on kafka-go's Client because its
// Reader cannot be one.
//
// A static member does not leave the group when it closes: the broker keeps
// its place (and its partitions) until the session timeout. A migration's
// target joins with the source's instance id, the broker swaps the members
// without a rebalance (the target gets the source's partitions, the other
// members are undisturbed) and fences the old member id (FENCED_INSTANCE_ID
// on its next call). So the handover never waits for the empty group's
// initial rebalance delay (group.initial.rebalance.delay.ms, 3 s by
// default), which the group never becomes, and never moves partitions
// between other replicas.
type static struct {
	k        *Kafka
	instance string
	client   *kafka.Client
	out      chan fetched
	cancel   context.CancelFunc
	done     chan struct{}

	mu         sync.Mutex
	memberID   string
	generation int
	assigned   []int
	// leading: this member assigned the partitions, of which the topic
	// had topicPartitions then (-1: not the leader).
	topicPartitions int
	// fenced is set once another member took the instance id.
	fenced error
	// joined closes, at joinedAt, when the member first reads.
	joined   chan struct{}
	joinedAt time.Time
	// gate, when not nil, holds the member's reads (not its join) until
	// Activate closes it: a handover's member joins while the replay runs
	// to the fence, but fetches nothing past it, taking no room from the
	// replay's budget, until the engine is at the fence.
	gate     chan struct{}
	activate sync.Once
}

// Activate implements activator: the prepared member starts reading.
func (s *static) Activate() {
	if s.gate != nil {
		s.activate.Do(func() { close(s.gate) })
	}
}

// PrepareLive is Live for a handover that has not reached the fence yet: a
// static member joins the group now and reads once activated (see
// activator); nil for a dynamic member, which joins when it goes live.
func (k *Kafka) PrepareLive() Source {
	if k.InstanceID == "" {
		return nil
	}
	return k.newStatic(make(chan struct{}))
}

// Session and heartbeat of a static member. A fenced source keeps its
// place this long for the target to take it.
const (
	staticSessionTimeout   = 30 * time.Second
	staticRebalanceTimeout = 10 * time.Second
	staticHeartbeat        = time.Second
)

func (k *Kafka) static() Source { return k.newStatic(nil) }

func (k *Kafka) newStatic(gate chan struct{}) *static {
	ctx, cancel := context.WithCancel(context.Background())
	s := &static{k: k, instance: k.InstanceID, out: make(chan fetched), cancel: cancel, done: make(chan struct{}), joined: make(chan struct{}), gate: gate,
		client: &kafka.Client{Addr: kafka.TCP(k.Brokers...), Timeout: staticRebalanceTimeout + 5*time.Second, Transport: k.transport()}}
	go s.run(ctx)
	return s
}

// run joins the group, reads the assigned partitions and heartbeats,
// joining again after a rebalance, until closed or fenced.
func (s *static) run(ctx context.Context) {
	defer close(s.done)
	s.waitForTopic(ctx)
	backoff := 10 * time.Millisecond
	for ctx.Err() == nil {
		err := s.join(ctx)
		if err == nil {
			backoff = 10 * time.Millisecond
			err = s.consume(ctx)
		}
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, kafka.FencedInstanceID):
			// Another member took this instance id: this one must never
			// deliver or commit again.
			s.mu.Lock()
			s.fenced = fmt.Errorf("group %s: instance %s was taken over by another member: %w", s.k.Group, s.instance, err)
			s.mu.Unlock()
			return
		case rejoin(err):
		default:
			s.report(err)
			if !sleepCtx(ctx, jitter(backoff)) {
				return
			}
			backoff = nextBackoff(backoff)
		}
	}
}

// waitForTopic returns once the topic exists (or the broker cannot be
// asked: join reports that). A member joining before it exists, the
// sidecar started before the producer creates the topic, is assigned no
// partitions, and the group, stable, never assigns it any.
func (s *static) waitForTopic(ctx context.Context) {
	backoff := 10 * time.Millisecond
	for {
		meta, err := s.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{s.k.Topic}})
		if err != nil || len(meta.Topics) != 1 || len(meta.Topics[0].Partitions) > 0 ||
			!errors.Is(meta.Topics[0].Error, kafka.UnknownTopicOrPartition) {
			return
		}
		if !sleepCtx(ctx, jitter(backoff)) {
			return
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// errTopicChanged: the topic's partitions are not those assigned.
var errTopicChanged = errors.New("the topic's partitions changed")

// rejoin: the group rebalanced (or forgot the member), or the leader saw
// the topic change: join again.
func rejoin(err error) bool {
	return errors.Is(err, errTopicChanged) || errors.Is(err, kafka.RebalanceInProgress) || errors.Is(err, kafka.IllegalGeneration) || errors.Is(err, kafka.UnknownMemberId)
}

// report hands err to a fetch waiting for one (the engine logs it and
// fetches again); none waiting, it is dropped: the group protocol never
// waits for the engine.
func (s *static) report(err error) {
	select {
	case s.out <- fetched{err: err}:
	default:
	}
}

// join is JoinGroup then SyncGroup; the leader assigns the topic's
// partitions by range over the members sorted by instance id.
func (s *static) join(ctx context.Context) error {
	s.mu.Lock()
	memberID := s.memberID
	s.mu.Unlock()
	req := &kafka.JoinGroupRequest{
		GroupID: s.k.Group, MemberID: memberID, GroupInstanceID: s.instance, ProtocolType: "consumer",
		SessionTimeout: staticSessionTimeout, RebalanceTimeout: staticRebalanceTimeout,
		Protocols: []kafka.GroupProtocol{{Name: "range", Metadata: kafka.GroupProtocolSubscription{Topics: []string{s.k.Topic}}}},
	}
	resp, err := s.client.JoinGroup(ctx, req)
	if err == nil && resp.Error != nil && errors.Is(resp.Error, kafka.MemberIDRequired) {
		req.MemberID = resp.MemberID
		resp, err = s.client.JoinGroup(ctx, req)
	}
	if err == nil {
		err = resp.Error
	}
	if err != nil {
		return fmt.Errorf("joining group %s as %s: %w", s.k.Group, s.instance, err)
	}
	var assignments []kafka.SyncGroupRequestAssignment
	topicPartitions := -1
	if resp.LeaderID == resp.MemberID && len(resp.Members) > 0 {
		parts, err := s.partitions(ctx)
		if err != nil {
			return err
		}
		assignments, topicPartitions = rangeAssign(s.k.Topic, resp.Members, parts), len(parts)
	}
	sync, err := s.client.SyncGroup(ctx, &kafka.SyncGroupRequest{
		GroupID: s.k.Group, GenerationID: resp.GenerationID, MemberID: resp.MemberID, GroupInstanceID: s.instance,
		ProtocolType: "consumer", ProtocolName: resp.ProtocolName, Assignments: assignments,
	})
	if err == nil {
		err = sync.Error
	}
	if err != nil {
		return fmt.Errorf("syncing group %s as %s: %w", s.k.Group, s.instance, err)
	}
	parts := slices.Clone(sync.Assignment.AssignedPartitions[s.k.Topic])
	slices.Sort(parts)
	s.mu.Lock()
	s.memberID, s.generation, s.assigned, s.topicPartitions = resp.MemberID, resp.GenerationID, parts, topicPartitions
	s.mu.Unlock()
	if s.k.OnJoin != nil {
		s.k.OnJoin(resp.GenerationID, parts)
	}
	return nil
}

// partitions are the topic's partitions now (none while it does not exist).
func (s *static) partitions(ctx context.Context) ([]int, error) {
	meta, err := s.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{s.k.Topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata of topic %s: %w", s.k.Topic, err)
	}
	var parts []int
	for _, t := range meta.Topics {
		if t.Error != nil {
			continue // not created yet
		}
		for _, p := range t.Partitions {
			parts = append(parts, p.ID)
		}
	}
	return parts, nil
}

// rangeAssign is the range assignor: members sorted by instance id (member
// id without one), the sorted partitions split in contiguous ranges, the
// first members taking one more when they do not divide evenly.
func rangeAssign(topic string, members []kafka.JoinGroupResponseMember, parts []int) []kafka.SyncGroupRequestAssignment {
	key := func(m kafka.JoinGroupResponseMember) string {
		if m.GroupInstanceID != "" {
			return m.GroupInstanceID
		}
		return m.ID
	}
	members = slices.Clone(members)
	slices.SortFunc(members, func(a, b kafka.JoinGroupResponseMember) int { return cmpString(key(a), key(b)) })
	parts = slices.Clone(parts)
	slices.Sort(parts)
	out := make([]kafka.SyncGroupRequestAssignment, len(members))
	per, extra, next := len(parts)/len(members), len(parts)%len(members), 0
	for i, m := range members {
		n := per
		if i < extra {
			n++
		}
		out[i] = kafka.SyncGroupRequestAssignment{MemberID: m.ID,
			Assignment: kafka.GroupProtocolAssignment{AssignedPartitions: map[string][]int{topic: parts[next : next+n]}}}
		next += n
	}
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// consume reads the assigned partitions from the group's committed offsets
// and heartbeats until the group rebalances (it returns the heartbeat's
// error) or ctx ends.
func (s *static) consume(ctx context.Context) error {
	s.mu.Lock()
	parts, memberID, generation, topicPartitions := s.assigned, s.memberID, s.generation, s.topicPartitions
	s.mu.Unlock()
	gctx, stop := context.WithCancel(ctx)
	m := &merged{out: s.out, closed: gctx.Done(), cancel: stop}
	defer func() { _ = m.Close() }()
	var committed map[int]int64
	if len(parts) > 0 {
		var err error
		if committed, err = s.k.Committed(gctx); err != nil {
			return fmt.Errorf("committed offsets of group %s: %w", s.k.Group, err)
		}
	}
	read := func() {
		for _, p := range parts {
			m.wg.Add(1)
			go m.pump(gctx, s.k, p, committed[p], nil)
		}
		s.mu.Lock()
		if s.joinedAt.IsZero() {
			s.joinedAt = time.Now()
			close(s.joined)
		}
		s.mu.Unlock()
	}
	// A prepared member heartbeats while its gate holds its reads: the
	// replay before it may outlast the session timeout.
	gate := s.gate
	select {
	case <-gate:
		gate = nil
	default:
	}
	if gate == nil {
		read()
	}
	t := time.NewTicker(staticHeartbeat)
	defer t.Stop()
	for tick := 1; ; tick++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-gate:
			gate = nil // a nil channel never fires again
			read()
			continue
		case <-t.C:
		}
		// The leader watches the topic's partitions, as Kafka's consumers
		// do, and rejoins when they changed (a rebalance follows): a topic
		// created after the group formed (the producer's first write
		// creates it) is assigned then. Every heartbeat while it has none,
		// every ten otherwise.
		if topicPartitions >= 0 && (topicPartitions == 0 || tick%10 == 0) {
			if now, err := s.partitions(ctx); err == nil && len(now) != topicPartitions {
				return errTopicChanged
			}
		}
		err := s.heartbeat(ctx, memberID, generation)
		switch {
		case err == nil:
		case rejoin(err), errors.Is(err, kafka.FencedInstanceID):
			if errors.Is(err, kafka.UnknownMemberId) {
				s.mu.Lock()
				s.memberID = ""
				s.mu.Unlock()
			}
			return err
		default:
			// The coordinator unreachable for a moment: the session
			// timeout is far longer than a heartbeat.
		}
	}
}

// heartbeat keeps the member in the group and returns the coordinator's
// error, a rebalance in progress included.
func (s *static) heartbeat(ctx context.Context, memberID string, generation int) error {
	resp, err := s.client.Heartbeat(ctx, &kafka.HeartbeatRequest{GroupID: s.k.Group, GenerationID: int32(generation),
		MemberID: memberID, GroupInstanceID: s.instance})
	if err != nil {
		return err
	}
	return heartbeatError(resp)
}

// heartbeatError is a Heartbeat answer's error. kafka-go (v0.4.51)
// declares the fields of Heartbeat responses v1 to v4 in the wrong order,
// error_code before throttle_time_ms where Kafka sends throttle_time_ms
// first, so Error is always nil and the error code arrives as the low 16
// bits of Throttle's milliseconds (the high bits of the real throttle
// land where it reads error_code). Without this, a member never learns of a
// rebalance: the broker waits the rebalance timeout for it, then drops it,
// and it goes on reading partitions it no longer owns.
func heartbeatError(resp *kafka.HeartbeatResponse) error {
	if resp.Error != nil {
		return resp.Error
	}
	if code := int16(resp.Throttle.Milliseconds() & 0xffff); code != 0 {
		return kafka.Error(code)
	}
	return nil
}

// FetchMessage implements Source.
func (s *static) FetchMessage(ctx context.Context) (kafka.Message, error) {
	select {
	case f := <-s.out:
		return f.m, f.err
	case <-s.done:
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.fenced != nil {
			return kafka.Message{}, s.fenced
		}
		return kafka.Message{}, errors.New("group member closed")
	case <-ctx.Done():
		return kafka.Message{}, ctx.Err()
	}
}

// CommitMessages implements Source: the next offset of each partition, in
// this member's generation (a member fenced by its successor is refused).
// A partition the group gave another member in a rebalance meanwhile is
// not committed: its new owner's offsets are not this member's to move
// (it starts from the last commit, so the message is delivered again
// there, as with any Kafka consumer across a rebalance).
func (s *static) CommitMessages(ctx context.Context, msgs ...kafka.Message) error {
	next := map[int]int64{}
	for _, m := range msgs {
		next[m.Partition] = max(next[m.Partition], m.Offset+1)
	}
	s.mu.Lock()
	var offs []kafka.OffsetCommit
	for p, o := range next {
		if slices.Contains(s.assigned, p) {
			offs = append(offs, kafka.OffsetCommit{Partition: p, Offset: o})
		}
	}
	if len(offs) == 0 {
		s.mu.Unlock()
		return nil
	}
	req := &kafka.OffsetCommitRequest{GroupID: s.k.Group, GenerationID: s.generation, MemberID: s.memberID, InstanceID: s.instance,
		Topics: map[string][]kafka.OffsetCommit{s.k.Topic: offs}}
	s.mu.Unlock()
	resp, err := s.client.OffsetCommit(ctx, req)
	if err != nil {
		return err
	}
	for _, p := range resp.Topics[s.k.Topic] {
		if p.Error != nil {
			return fmt.Errorf("committing partition %d: %w", p.Partition, p.Error)
		}
	}
	return nil
}

// Close implements Source. It does not leave the group: the member's
// place waits, until the session timeout, for the same instance id (the
// migration's target, or this pod rejoining after a rollback).
func (s *static) Close() error {
	s.cancel()
	<-s.done
	return nil
}

// Joined implements joiner.
func (s *static) Joined() <-chan struct{} { return s.joined }

// JoinedAt implements joiner.
func (s *static) JoinedAt() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.joinedAt
}

// Assigned is the partitions the member holds in the current generation.
func (s *static) Assigned() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.assigned)
}
