package replay

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ms2m/ms2m/internal/expect"
	"github.com/ms2m/ms2m/internal/testenv"
)

// restartableBroker is a kfake broker that keeps its log and the groups'
// committed offsets in a directory (kfake.DataDir), so it can be shut down
// and started again on the same address with its data, like a Kafka broker
// restarted in place.
type restartableBroker struct {
	broker
	port int
	dir  string
	c    *kfake.Cluster
}

func startRestartableBroker(t *testing.T) *restartableBroker {
	t.Helper()
	_, port, _ := net.SplitHostPort(testenv.FreeAddr(t))
	p, _ := strconv.Atoi(port)
	b := &restartableBroker{port: p, dir: t.TempDir()}
	b.start(t)
	t.Cleanup(func() { b.c.Close() })
	return b
}

func (b *restartableBroker) start(t *testing.T) {
	t.Helper()
	// The port was free when chosen; poll in case the previous listener is
	// still being released.
	expect.Eventually(t, "broker listening on its address", func() (err error) {
		b.c, err = kfake.NewCluster(kfake.Ports(b.port), kfake.SeedTopics(1, topic), kfake.DataDir(b.dir))
		return err
	})
	b.addr = b.c.ListenAddrs()[0]
}

// TestBrokerRestartLosesNothingAndDuplicatesNothing stops the broker while
// the app is applying a message, so that the sidecar cannot commit it, and
// starts the broker again on the same address with its data. The sidecar
// rides it out in place: the pending commit is retried until it lands, and
// the message is not delivered again even if the group's reader fetches it
// again; then live processing goes on. Every message reaches the app exactly
// once, in order, and the group's committed offset ends at the head.
func TestBrokerRestartLosesNothingAndDuplicatesNothing(t *testing.T) {
	b := startRestartableBroker(t)
	a := newApp()
	a.holdAt = 20
	var kafkaErrors atomic.Int64
	e := NewLive(b.sources("restart"), deliverer(t, a))
	e.OnKafkaError = func(err error) { kafkaErrors.Add(1); t.Log(err) }
	runEngine(t, e)
	b.produce(t, 0, 30)

	<-a.held
	// The app is applying offset 20: the broker goes away now.
	b.c.Close()
	close(a.release)
	expect.Eventually(t, "the sidecar fails to commit offset 20 and keeps trying", func() error {
		if kafkaErrors.Load() == 0 {
			return fmt.Errorf("no Kafka error yet")
		}
		return nil
	})
	if pos := e.Position(); pos.Next[0] != 20 {
		t.Fatalf("position while offset 20 is acknowledged but not committed = %v; want 20 (the fence must never pass an uncommitted offset)", pos.Next)
	}

	b.start(t)
	expect.Eventually(t, "the restarted broker has the group's committed offset", func() error {
		// A first call may fail on a connection pooled before the restart.
		got, err := b.committedErr("restart")
		if err == nil && got < 20 {
			t.Fatalf("the restarted broker lost the group's committed offset: %d, want at least 20", got)
		}
		return err
	})
	b.produce(t, 30, 20)
	expectExactly(t, a, 50)
	expect.Eventually(t, "the group committed the head", func() error {
		if got, err := b.committedErr("restart"); err != nil || got != 50 {
			return fmt.Errorf("committed %d (%v), want 50", got, err)
		}
		return nil
	})
	t.Logf("%d Kafka errors retried across the restart", kafkaErrors.Load())
}

// TestBrokerRestartDuringReplayLosesNothing restarts the broker during a
// migration's Replaying phase: the source consumes live as a group member,
// the target replays behind it with standalone partition readers. Messages
// produced after the restart are read through the restarted broker by both.
// Then the source is fenced and the target hands over: the source processed
// live exactly [0, F), the target replayed exactly [0, F) and processes live
// exactly from F.
func TestBrokerRestartDuringReplayLosesNothing(t *testing.T) {
	b := startRestartableBroker(t)
	sources := b.sources("restart-replay")
	srcApp, tgtApp := newApp(), newApp()
	tgtApp.holdAt = 15
	var kafkaErrors atomic.Int64
	onErr := func(err error) { kafkaErrors.Add(1); t.Log(err) }
	source := NewLive(sources, deliverer(t, srcApp))
	source.OnKafkaError = onErr
	runEngine(t, source)
	b.produce(t, 0, 40)
	expectExactly(t, srcApp, 40)
	target := NewReplay(sources, deliverer(t, tgtApp), map[int]int64{0: 0})
	target.OnKafkaError = onErr
	runEngine(t, target)

	<-tgtApp.held
	b.c.Close()
	close(tgtApp.release)
	b.start(t)
	b.produce(t, 40, 20) // only the restarted broker has these
	expectExactly(t, srcApp, 60)
	expect.Eventually(t, "the target replays what the source processed after the restart", func() error {
		if n := target.Position().Next[0]; n != 60 {
			return fmt.Errorf("target at %d", n)
		}
		return nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*expect.Timeout)
	defer cancel()
	fenced, err := source.Fence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := target.Handover(ctx, fenced.Fence); err != nil {
		t.Fatal(err)
	}
	b.produce(t, 60, 10)
	expectExactly(t, tgtApp, 70)
	expectExactly(t, srcApp, 60)
	if pos := target.Position(); fenced.Fence[0] != 60 || pos.Replayed != 60 || pos.Mode != ModeLive {
		t.Fatalf("fence %v; target replayed %d (want exactly the 60 below the fence) and is %s", fenced.Fence, pos.Replayed, pos.Mode)
	}
	t.Logf("%d Kafka errors retried across the restart", kafkaErrors.Load())
}
