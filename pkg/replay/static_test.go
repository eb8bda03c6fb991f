package replay

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ms2m/ms2m/internal/expect"
)

// joinedMember is static member orders-0 of group, once it joined.
func joinedMember(t *testing.T, b *broker, group string) *static {
	t.Helper()
	k := b.sources(group)
	k.InstanceID = "orders-0"
	s := k.Live().(*static)
	t.Cleanup(func() { _ = s.Close() })
	expect.Eventually(t, "member joined", func() error {
		if s.gen() == 0 {
			return fmt.Errorf("not joined")
		}
		return nil
	})
	return s
}

func (s *static) gen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.generation
}

// Two static members (two replicas of one consumer) share a topic's four
// partitions. One is replaced by a member with its instance id, as a
// migration's target replaces the fenced source: the broker swaps them
// without a rebalance. The newcomer holds exactly the partitions of the one
// it replaced, the other member keeps its generation and its partitions
// and consumes on, and the replaced member's commits are refused.
func TestStaticMemberIsReplacedWithoutARebalance(t *testing.T) {
	b := startBroker(t, 4)
	member := func(id string) *static {
		k := b.sources("replicas")
		k.InstanceID = id
		s := k.Live().(*static)
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	a, c := member("orders-0"), member("orders-1")
	expect.Eventually(t, "two members with two partitions each", func() error {
		pa, pc := a.Assigned(), c.Assigned()
		if len(pa) != 2 || len(pc) != 2 || slices.ContainsFunc(pa, func(p int) bool { return slices.Contains(pc, p) }) {
			return fmt.Errorf("assigned %v and %v", pa, pc)
		}
		return nil
	})
	aParts, cParts, cGen := a.Assigned(), c.Assigned(), c.gen()
	_ = a.Close() // fenced: it stops without leaving the group

	a2 := member("orders-0")
	expect.Eventually(t, "the newcomer holds the replaced member's partitions", func() error {
		if got := a2.Assigned(); !slices.Equal(got, aParts) {
			return fmt.Errorf("assigned %v, want %v", got, aParts)
		}
		return nil
	})
	b.produce(t, 0, 40)
	ctx, cancel := context.WithTimeout(context.Background(), expect.Timeout)
	defer cancel()
	for name, s := range map[string]*static{"newcomer": a2, "other replica": c} {
		want := aParts
		if s == c {
			want = cParts
		}
		m, err := s.FetchMessage(ctx)
		if err != nil || !slices.Contains(want, m.Partition) {
			t.Fatalf("%s fetched partition %d (%v); want one of %v", name, m.Partition, err, want)
		}
		if err := s.CommitMessages(ctx, m); err != nil {
			t.Fatalf("%s committing: %v", name, err)
		}
	}
	if g, p := c.gen(), c.Assigned(); g != cGen || !slices.Equal(p, cParts) {
		t.Fatalf("the other replica went from generation %d %v to %d %v: it was rebalanced", cGen, cParts, g, p)
	}
	err := a.CommitMessages(ctx, kafka.Message{Partition: aParts[0], Offset: 5})
	if err == nil || !strings.Contains(err.Error(), "Fenced") {
		t.Fatalf("the replaced member's commit: %v; want it refused as fenced", err)
	}
}

// The member hears the coordinator's heartbeat errors, which kafka-go's
// Client misreads (heartbeatError): a heartbeat of a stale generation is
// IllegalGeneration, of a member the group does not know UnknownMemberId.
func TestHeartbeatErrorsReachTheMember(t *testing.T) {
	s := joinedMember(t, startBroker(t, 1), "hb")
	ctx := context.Background()
	s.mu.Lock()
	memberID, gen := s.memberID, s.generation
	s.mu.Unlock()
	if err := s.heartbeat(ctx, memberID, gen); err != nil {
		t.Fatalf("heartbeat of the member: %v", err)
	}
	if err := s.heartbeat(ctx, memberID, gen+7); !errors.Is(err, kafka.IllegalGeneration) {
		t.Fatalf("heartbeat of a stale generation: %v; want IllegalGeneration", err)
	}
	if err := s.heartbeat(ctx, memberID+"-gone", gen); err == nil {
		t.Fatal("heartbeat of an unknown member id answered no error")
	}
}

// One replica of a two-replica group is migrated: its pause names its
// partitions, so O and F cover exactly those; the target replays and takes
// over exactly those, as the same static member; the other replica is never
// rebalanced; every message is applied live exactly once across the three.
func TestOneReplicaOfAGroupMovesWithItsPartitions(t *testing.T) {
	b := startBroker(t, 4)
	sources := func(id string) *Kafka {
		k := b.sources("replicas")
		k.InstanceID = id
		return k
	}
	ra, rb, rt := newRecorder(), newRecorder(), newRecorder()
	a, other := NewLive(sources("orders-0"), deliverer(t, ra)), NewLive(sources("orders-1"), deliverer(t, rb))
	runEngine(t, a)
	runEngine(t, other)
	member := func(e *Engine) *static {
		e.mu.Lock()
		defer e.mu.Unlock()
		s, _ := e.src.(*static)
		return s
	}
	expect.Eventually(t, "two replicas with two partitions each", func() error {
		if pa, pb := a.Position().Assigned, other.Position().Assigned; len(pa) != 2 || len(pb) != 2 {
			return fmt.Errorf("assigned %v and %v", pa, pb)
		}
		return nil
	})
	otherGen, otherParts := member(other).gen(), other.Position().Assigned
	b.produce(t, 0, 40)
	ctx, cancel := context.WithTimeout(context.Background(), expect.Timeout)
	defer cancel()
	pos, err := a.Pause(ctx)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := sources("").Committed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	o := map[int]int64{}
	for _, p := range pos.Assigned {
		o[p] = committed[p]
	}
	mustResume(t, a)
	target := NewReplay(sources("orders-0"), deliverer(t, rt), o)
	runEngine(t, target)
	b.produce(t, 40, 40)
	f, err := a.Fence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(slices.Sorted(maps.Keys(f.Fence)), pos.Assigned) {
		t.Fatalf("fence %v; want exactly the replica's partitions %v", f.Fence, pos.Assigned)
	}
	if _, err := target.Handover(ctx, f.Fence); err != nil {
		t.Fatal(err)
	}
	b.produce(t, 80, 40)
	expect.Eventually(t, "every message applied live exactly once", func() error {
		sa, sb, st := ra.snapshot(), rb.snapshot(), rt.snapshot()
		total := 0
		for p := range 4 {
			live := append(append(slices.Clone(sa.live[p]), sb.live[p]...), st.live[p]...)
			slices.Sort(live)
			if len(slices.Compact(slices.Clone(live))) != len(live) {
				return fmt.Errorf("partition %d applied live twice: %v", p, live)
			}
			total += len(live)
			if len(st.replay[p]) > 0 && !slices.Contains(pos.Assigned, p) {
				return fmt.Errorf("the target replayed partition %d of the other replica", p)
			}
			if len(st.live[p]) > 0 && !slices.Contains(pos.Assigned, p) {
				return fmt.Errorf("the target took partition %d of the other replica", p)
			}
		}
		if total != 120 {
			return fmt.Errorf("%d of 120 applied live", total)
		}
		return nil
	})
	if g, p := member(other).gen(), other.Position().Assigned; g != otherGen || !slices.Equal(p, otherParts) {
		t.Fatalf("the other replica went from generation %d %v to %d %v", otherGen, otherParts, g, p)
	}
}

// A sidecar that starts before its topic exists (the producer creates it
// later) joins once the topic is there, and is given its partitions. Had
// it joined first (its transport's metadata, from before the topic, is
// what the leader assigns from), the stable group would never have given
// it any.
func TestStaticMemberStartedBeforeItsTopicGetsItsPartitions(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	var mu sync.Mutex
	metadata := 0
	c.ControlKey(int16(kmsg.Metadata), func(kmsg.Request) (kmsg.Response, error, bool) {
		mu.Lock()
		metadata++
		mu.Unlock()
		return nil, nil, false
	})
	b := &broker{addr: c.ListenAddrs()[0]}
	k := b.sources("early")
	k.InstanceID = "orders-0"
	s := k.Live().(*static)
	t.Cleanup(func() { _ = s.Close() })
	expect.Eventually(t, "the member's first look at the cluster", func() error {
		mu.Lock()
		defer mu.Unlock()
		if metadata == 0 {
			return errors.New("no metadata request yet")
		}
		return nil
	})
	admin := &kafka.Client{Addr: kafka.TCP(b.addr), Timeout: 5 * time.Second}
	resp, err := admin.CreateTopics(context.Background(), &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 2, ReplicationFactor: 1}}})
	if err != nil || resp.Errors[topic] != nil {
		t.Fatalf("creating the topic: %v %v", err, resp)
	}
	expect.Eventually(t, "the member holds the topic's partitions", func() error {
		if got := s.Assigned(); !slices.Equal(got, []int{0, 1}) {
			return fmt.Errorf("assigned %v", got)
		}
		return nil
	})
	b.produce(t, 0, 1)
	ctx, cancel := context.WithTimeout(context.Background(), expect.Timeout)
	defer cancel()
	if _, err := s.FetchMessage(ctx); err != nil {
		t.Fatalf("fetching: %v", err)
	}
}

// Partitions added to the topic after the group formed are given out: the
// group's leader watches the topic, as Kafka's consumers do, and rejoins
// when its partitions change (a rebalance follows).
func TestStaticMemberGetsPartitionsAddedLater(t *testing.T) {
	b := startBroker(t, 1)
	s := joinedMember(t, b, "grown")
	admin := &kafka.Client{Addr: kafka.TCP(b.addr), Timeout: 5 * time.Second, Transport: &kafka.Transport{}}
	resp, err := admin.CreatePartitions(context.Background(), &kafka.CreatePartitionsRequest{
		Topics: []kafka.TopicPartitionsConfig{{Name: topic, Count: 3}}})
	if err != nil || resp.Errors[topic] != nil {
		t.Fatalf("adding partitions: %v %v", err, resp)
	}
	expect.Eventually(t, "the member holds the added partitions", func() error {
		if got := s.Assigned(); !slices.Equal(got, []int{0, 1, 2}) {
			return fmt.Errorf("assigned %v", got)
		}
		return nil
	})
}

// The group's committed offsets can be read as soon as the topic exists,
// though this Kafka's metadata was cached before it did: a fence right
// after the producer created the topic once failed with "no metadata",
// and the migration was rolled back.
func TestCommittedRightAfterTheTopicAppears(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	b := &broker{addr: c.ListenAddrs()[0]}
	k := b.sources("fresh")
	if _, err := k.Committed(context.Background()); err == nil {
		t.Fatal("committed offsets of a topic that does not exist")
	}
	admin := &kafka.Client{Addr: kafka.TCP(b.addr), Timeout: 5 * time.Second, Transport: &kafka.Transport{}}
	resp, err := admin.CreateTopics(context.Background(), &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 2, ReplicationFactor: 1}}})
	if err != nil || resp.Errors[topic] != nil {
		t.Fatalf("creating the topic: %v %v", err, resp)
	}
	if _, err := admin.OffsetCommit(context.Background(), &kafka.OffsetCommitRequest{GroupID: "fresh", GenerationID: -1,
		Topics: map[string][]kafka.OffsetCommit{topic: {{Partition: 0, Offset: 0}}}}); err != nil {
		t.Fatal(err)
	}
	got, err := k.Committed(context.Background())
	if err != nil || len(got) != 2 {
		t.Fatalf("committed offsets right after the topic appeared: %v (%v); want both partitions", got, err)
	}
}

// A static member that delivered from each of its partitions answers a
// pause with O without a broker round trip inside the pause (Next is what
// it committed), and that O is the group's committed offsets.
func TestAPauseOrFenceOfAStaticMemberAsksTheBrokerNothing(t *testing.T) {
	c, b := startCluster(t, 2)
	var fetches atomic.Int64
	c.ControlKey(int16(kmsg.OffsetFetch), func(kmsg.Request) (kmsg.Response, error, bool) {
		fetches.Add(1)
		return nil, nil, false
	})
	k := b.sources("quick-pause")
	k.InstanceID = "orders-0"
	rec := newRecorder()
	e := NewLive(k, deliverer(t, rec))
	runEngine(t, e)
	b.produce(t, 0, 20)
	expect.Eventually(t, "deliveries from both partitions", func() error {
		if pos := e.Position(); len(pos.Assigned) != 2 || len(pos.Next) != 2 || pos.Delivered != 20 {
			return fmt.Errorf("assigned %v, next %v, delivered %d", pos.Assigned, pos.Next, pos.Delivered)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), expect.Timeout)
	defer cancel()
	before := fetches.Load()
	pos, err := e.Pause(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := fetches.Load() - before; n != 0 {
		t.Fatalf("the pause asked the broker for the committed offsets %d times", n)
	}
	committed, err := b.sources("quick-pause").Committed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(pos.Checkpoint, committed) {
		t.Fatalf("O %v; the group's committed offsets are %v", pos.Checkpoint, committed)
	}
	mustResume(t, e)

	// So does its fence: F is what it committed, inside the handover's
	// stall without a round trip to the broker.
	b.produce(t, 20, 10)
	expect.Eventually(t, "the resumed member delivered the rest", func() error {
		if n := e.Position().Delivered; n != 30 {
			return fmt.Errorf("%d delivered", n)
		}
		return nil
	})
	before = fetches.Load()
	fenced, err := e.Fence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := fetches.Load() - before; n != 0 {
		t.Fatalf("the fence asked the broker for the committed offsets %d times", n)
	}
	if committed, err = b.sources("quick-pause").Committed(ctx); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(fenced.Fence, committed) || total(committed) != 30 {
		t.Fatalf("F %v; the group's committed offsets are %v (30 delivered)", fenced.Fence, committed)
	}
}

// A handover's prepared member stays in the group while its reads wait
// for the replay (which may outlast the session timeout): it heartbeats
// from its join on, and reads once activated.
func TestAPreparedMemberHeartbeatsUntilItReads(t *testing.T) {
	c, b := startCluster(t, 1)
	var beats atomic.Int64
	c.ControlKey(int16(kmsg.Heartbeat), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		beats.Add(1)
		return nil, nil, false
	})
	b.produce(t, 0, 1)
	k := b.sources("prepared")
	k.InstanceID = "orders-0"
	src := k.PrepareLive()
	t.Cleanup(func() { _ = src.Close() })
	expect.Eventually(t, "heartbeats before any read", func() error {
		if n := beats.Load(); n < 2 {
			return fmt.Errorf("%d heartbeats", n)
		}
		return nil
	})
	select {
	case <-src.(joiner).Joined():
		t.Fatal("the prepared member reads before it was activated")
	default:
	}
	src.(activator).Activate()
	ctx, cancel := context.WithTimeout(context.Background(), expect.Timeout)
	defer cancel()
	m, err := src.FetchMessage(ctx)
	if err != nil || m.Offset != 0 {
		t.Fatalf("after activation: offset %d (%v); want the first message", m.Offset, err)
	}
}
