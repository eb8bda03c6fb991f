package replay

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ms2m/ms2m/internal/expect"
	sandboxbroker "github.com/ms2m/ms2m/pkg/sandbox/broker"
)

// liveApp records when it first saw a message that was not replayed.
type liveApp struct{ first chan time.Time }

func (a *liveApp) ServeHTTP(_ http.ResponseWriter, r *http.Request) {
	if r.Header.Get(HeaderReplay) != "true" {
		select {
		case a.first <- time.Now():
		default:
		}
	}
}

// BenchmarkHandoverStall is the handover on a broker that delays the first
// rebalance of an empty group by 3 s, as Apache Kafka does by default
// (group.initial.rebalance.delay.ms): from the source's fence to the
// target's first live delivery of a message produced right after it.
// "static" hands the source's place to the target as a static member
// (group.instance.id); "leave-join" is the handover before it: the source
// leaves the group, the target joins the empty group and waits the delay.
// Reports the median stall as handover-ms.
func BenchmarkHandoverStall(b *testing.B) {
	for _, mode := range []string{"static", "leave-join"} {
		b.Run(mode, func(b *testing.B) {
			var stalls []time.Duration
			for i := range b.N {
				stalls = append(stalls, handoverStall(b, mode == "static", i))
			}
			slices.Sort(stalls)
			b.ReportMetric(float64(stalls[len(stalls)/2].Microseconds())/1000, "handover-ms")
		})
	}
}

func handoverStall(b *testing.B, static bool, i int) time.Duration {
	b.StopTimer()
	defer b.StartTimer()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, topic))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	sandboxbroker.DelayJoinsIntoEmptyGroups(c, sandboxbroker.DefaultInitialRebalanceDelay)
	br := &broker{addr: c.ListenAddrs()[0]}
	sources := func() *Kafka {
		k := br.sources("stall-" + strconv.Itoa(i))
		if static {
			k.InstanceID = "orders-0"
		}
		return k
	}
	src := sources()
	source := NewLive(src, deliverer(b, &liveApp{first: make(chan time.Time, 1)}))
	runEngine(b, source)
	br.produce(b, 0, 20)
	waitDelivered(b, source, 20)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o, err := src.Committed(ctx)
	if err != nil {
		b.Fatal(err)
	}
	app := &liveApp{first: make(chan time.Time, 1)}
	target := NewReplay(sources(), deliverer(b, app), o)
	runEngine(b, target)
	f, err := source.Fence(ctx)
	if err != nil {
		b.Fatal(err)
	}
	fenced := time.Now()
	b.StartTimer()
	if !static {
		// The source's reader leaves in the background; the controller's
		// handover call comes tens of milliseconds later, by when it has
		// left: the target joins an empty group.
		expect.Eventually(b, "the source left the group", func() error {
			resp, err := (&kafka.Client{Addr: kafka.TCP(br.addr)}).DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{"stall-" + strconv.Itoa(i)}})
			if err != nil {
				return err
			}
			if len(resp.Groups) != 1 || len(resp.Groups[0].Members) != 0 {
				return fmt.Errorf("group %+v", resp.Groups)
			}
			return nil
		})
	}
	br.produce(b, 20, 1)
	if _, err := target.Handover(ctx, f.Fence); err != nil {
		b.Fatal(err)
	}
	select {
	case t := <-app.first:
		b.StopTimer()
		return t.Sub(fenced)
	case <-ctx.Done():
		b.Fatal("the target never delivered live")
	}
	return 0
}
