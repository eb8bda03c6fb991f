package broker

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

// The first join into an empty group waits the initial rebalance delay, as
// on Apache Kafka; a static member that replaces a member of a group that
// has one (a migration's target taking its source's place) does not.
func TestJoinsIntoEmptyGroupsWaitTheDelay(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	const delay = time.Second
	DelayJoinsIntoEmptyGroups(c, delay)
	cl := &kafka.Client{Addr: kafka.TCP(c.ListenAddrs()...), Timeout: 10 * time.Second, Transport: &kafka.Transport{}}
	join := func(memberID string) (*kafka.JoinGroupResponse, time.Duration) {
		t.Helper()
		start := time.Now()
		resp, err := cl.JoinGroup(context.Background(), &kafka.JoinGroupRequest{GroupID: "g", MemberID: memberID, GroupInstanceID: "orders-0",
			ProtocolType: "consumer", SessionTimeout: 30 * time.Second, RebalanceTimeout: 10 * time.Second,
			Protocols: []kafka.GroupProtocol{{Name: "range", Metadata: kafka.GroupProtocolSubscription{Topics: []string{"orders"}}}}})
		if err == nil {
			err = resp.Error
		}
		if err != nil {
			t.Fatal(err)
		}
		return resp, time.Since(start)
	}
	first, took := join("")
	if took < delay {
		t.Fatalf("the first join into the empty group took %s; want the %s delay", took, delay)
	}
	if _, err := cl.SyncGroup(context.Background(), &kafka.SyncGroupRequest{GroupID: "g", GenerationID: first.GenerationID,
		MemberID: first.MemberID, GroupInstanceID: "orders-0", ProtocolType: "consumer", ProtocolName: first.ProtocolName,
		Assignments: []kafka.SyncGroupRequestAssignment{{MemberID: first.MemberID,
			Assignment: kafka.GroupProtocolAssignment{AssignedPartitions: map[string][]int{"orders": {0}}}}}}); err != nil {
		t.Fatal(err)
	}
	replacement, took := join("")
	if took >= delay || replacement.GenerationID != first.GenerationID {
		t.Fatalf("replacing the static member took %s and moved the generation %d → %d; want no delay and no rebalance",
			took, first.GenerationID, replacement.GenerationID)
	}
}
