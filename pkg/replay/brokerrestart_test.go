package replay

import (
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ms2m/ms2m/pkg/expect"
	"github.com/ms2m/ms2m/pkg/testenv"
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
	e.OnKafkaError = func(error) { kafkaErrors.Add(1) }
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
