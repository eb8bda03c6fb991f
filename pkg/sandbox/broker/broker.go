// Package broker makes the sandbox's Kafka-protocol broker (kfake) behave
// like Apache Kafka with its default settings where ms2m's handover
// depends on it.
package broker

import (
	"context"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// DefaultInitialRebalanceDelay is Apache Kafka's
// group.initial.rebalance.delay.ms (GroupCoordinatorConfig: 3000).
const DefaultInitialRebalanceDelay = 3 * time.Second

// DelayJoinsIntoEmptyGroups holds a JoinGroup into a group that has no
// member for delay, as Apache Kafka delays the first rebalance of an empty
// group by group.initial.rebalance.delay.ms (kfake completes it at once).
// A dynamic member's first join, which the broker answers at once with
// MEMBER_ID_REQUIRED, is not held; its second is. Joins into a group with
// members (a static member replacing one with its instance id) pass at
// once. Joins arriving during the delay are each held from their arrival,
// where Kafka ends them together: at most delay later than Kafka would.
func DelayJoinsIntoEmptyGroups(c *kfake.Cluster, delay time.Duration) {
	if delay <= 0 {
		return
	}
	admin := &kafka.Client{Addr: kafka.TCP(c.ListenAddrs()...), Timeout: 5 * time.Second, Transport: &kafka.Transport{}}
	c.ControlKey(int16(kmsg.JoinGroup), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		join := req.(*kmsg.JoinGroupRequest)
		if join.MemberID == "" && join.InstanceID == nil && join.Version >= 4 {
			return nil, nil, false
		}
		// The control yields while it waits, so the broker (and the
		// describe below) runs on.
		c.SleepControl(func() {
			if empty(admin, join.Group) {
				time.Sleep(delay) // the broker's delay itself, not synchronisation
			}
		})
		return nil, nil, false
	})
}

// empty reports whether group has no members (or does not exist yet).
func empty(admin *kafka.Client, group string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := admin.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
	if err != nil || len(resp.Groups) != 1 {
		return true
	}
	g := resp.Groups[0]
	return len(g.Members) == 0
}
