package replay

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ms2m/ms2m/internal/expect"
)

// clockedApp records when it received each live message.
type clockedApp struct {
	mu   sync.Mutex
	live map[int]map[int64]time.Time
}

func (a *clockedApp) ServeHTTP(_ http.ResponseWriter, r *http.Request) {
	now := time.Now()
	if r.Header.Get(HeaderReplay) == "true" {
		return
	}
	p, _ := strconv.Atoi(r.Header.Get(HeaderPartition))
	off, _ := strconv.ParseInt(r.Header.Get(HeaderOffset), 10, 64)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.live == nil {
		a.live = map[int]map[int64]time.Time{}
	}
	if a.live[p] == nil {
		a.live[p] = map[int64]time.Time{}
	}
	a.live[p][off] = now
}

// heldUntil checks that every live message at or past from (per
// partition) reached the app no earlier than until, and counts them.
func (a *clockedApp) heldUntil(from map[int]int64, until time.Time) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for p, offs := range a.live {
		for off, got := range offs {
			if f, ok := from[p]; !ok || off < f {
				continue
			}
			if got.Before(until) {
				return 0, fmt.Errorf("partition %d offset %d reached the app %s before the stall's end", p, off, until.Sub(got))
			}
			n++
		}
	}
	return n, nil
}

func total(offs map[int]int64) (n int64) {
	for _, o := range offs {
		n += o
	}
	return n
}

// within fails unless *got lies in [from, to].
func within(t *testing.T, what string, got *time.Time, from, to time.Time) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s: not reported", what)
	}
	if got.Before(from) || got.After(to) {
		t.Fatalf("%s %s lies outside the call that caused it [%s, %s]", what, got.Format(time.StampMicro), from.Format(time.StampMicro), to.Format(time.StampMicro))
	}
}

// The stalls a migration causes, as the sidecars report them (what the
// controller adds up as the migration's downtime): the checkpoint pause
// from PausedAt to ResumedAt on the source, the handover from the source's
// FencedAt to the target's LiveAt. Under a steady producer, each reported
// stall lies within the calls that caused it, no message past the stopped
// position reaches an app before the stall ends, and the target is live
// only once its group member has joined (its SyncGroup answered).
func TestStallsAreTheIntervalsWithoutDelivery(t *testing.T) {
	c, b := startCluster(t, 2)
	var mu sync.Mutex
	var synced time.Time
	c.ControlKey(int16(kmsg.SyncGroup), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		mu.Lock()
		synced = time.Now()
		mu.Unlock()
		return nil, nil, false
	})
	sources := b.sources("stalls")
	sources.InstanceID = "orders-0"

	ctx, cancel := context.WithTimeout(context.Background(), 2*expect.Timeout)
	defer cancel()
	produceCtx, stopProducing := context.WithCancel(ctx)
	producerDone := make(chan struct{})
	t.Cleanup(func() { stopProducing(); <-producerDone })
	go func() {
		defer close(producerDone)
		w := &kafka.Writer{Addr: kafka.TCP(b.addr), Topic: topic, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll}
		defer func() { _ = w.Close() }()
		for i := 0; produceCtx.Err() == nil; i++ {
			_ = w.WriteMessages(produceCtx, kafka.Message{Value: []byte(strconv.Itoa(i))})
		}
	}()

	sourceApp, targetApp := &clockedApp{}, &clockedApp{}
	source := NewLive(sources, deliverer(t, sourceApp))
	runEngine(t, source)
	waitDelivered(t, source, 50)

	// The checkpoint pause.
	beforePause := time.Now()
	paused, err := source.Pause(ctx)
	if err != nil {
		t.Fatal(err)
	}
	afterPause := time.Now()
	expect.Eventually(t, "messages waiting behind the pause", func() error {
		end, err := b.endOffsets(ctx)
		if err != nil {
			return err
		}
		if total(end)-total(paused.Next) < 10 {
			return fmt.Errorf("%d messages past the pause", total(end)-total(paused.Next))
		}
		return nil
	})
	beforeResume := time.Now()
	resumed := mustResume(t, source)
	afterResume := time.Now()
	within(t, "PausedAt", resumed.PausedAt, beforePause, afterPause)
	within(t, "ResumedAt", resumed.ResumedAt, beforeResume, afterResume)
	expect.Eventually(t, "held messages delivered after the resume", func() error {
		n, err := sourceApp.heldUntil(paused.Next, *resumed.ResumedAt)
		if err == nil && n < 10 {
			err = fmt.Errorf("%d delivered past the pause", n)
		}
		return err
	})

	// The handover: the target replays from O, the source is fenced at F,
	// the target goes live there.
	o, err := sources.Committed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	target := NewReplay(sources, deliverer(t, targetApp), o)
	runEngine(t, target)
	beforeFence := time.Now()
	fenced, err := source.Fence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	afterFence := time.Now()
	within(t, "FencedAt", fenced.FencedAt, beforeFence, afterFence)
	beforeHandover := time.Now()
	live, err := target.Handover(ctx, fenced.Fence)
	if err != nil {
		t.Fatal(err)
	}
	afterHandover := time.Now()
	within(t, "LiveAt", live.LiveAt, beforeHandover, afterHandover)
	expect.Eventually(t, "the target delivers live past the fence, after LiveAt", func() error {
		n, err := targetApp.heldUntil(fenced.Fence, *live.LiveAt)
		if err == nil && n < 10 {
			err = fmt.Errorf("%d delivered live by the target", n)
		}
		return err
	})
	mu.Lock()
	joined := synced
	mu.Unlock()
	if live.LiveAt.Before(joined) {
		t.Fatalf("LiveAt is %s before the target's member joined the group (its SyncGroup, the group's last)", joined.Sub(*live.LiveAt))
	}
	if n, _ := sourceApp.heldUntil(fenced.Fence, time.Time{}); n != 0 {
		t.Fatalf("the fenced source delivered %d messages past the fence", n)
	}
	// Where the target's part went: the replay from the call to the
	// fence, then what was left of the join (the member joins while the
	// replay runs; LiveAt, checked above, is not before its SyncGroup).
	st := live.HandoverSteps
	if st == nil {
		t.Fatal("the live target reports no handover steps")
	}
	atFence := live.LiveAt.Add(-st.Join)
	asked := atFence.Add(-st.Replay)
	if st.Behind < 0 || st.Behind > total(fenced.Fence)-total(o) || st.Replay < 0 || st.Join < 0 {
		t.Fatalf("steps %+v: want 0 ≤ behind ≤ %d (F - O) and no negative time", st, total(fenced.Fence)-total(o))
	}
	within(t, "the handover call by its steps", &asked, beforeHandover, afterHandover)
	t.Logf("handover steps: %d behind, replayed in %s, joined in %s", st.Behind, st.Replay, st.Join)
	t.Logf("checkpoint pause %s, handover %s", resumed.ResumedAt.Sub(*resumed.PausedAt), live.LiveAt.Sub(*fenced.FencedAt))
}

// Before the fence, the controller lets a target within the downtime
// budget catch up: CaughtUp answers once the target has replayed
// everything the live member committed, so what it replays after the
// fence is what the source processed since.
func TestCaughtUpAnswersOnceTheTargetReplayedEverything(t *testing.T) {
	b := startBroker(t, 2)
	sources := b.sources("catch-up")
	b.produce(t, 0, 200)
	source := NewLive(sources, deliverer(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	runEngine(t, source)
	waitDelivered(t, source, 200)
	ctx, cancel := context.WithTimeout(context.Background(), expect.Timeout)
	defer cancel()
	from := map[int]int64{0: 0, 1: 0}
	slow := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { time.Sleep(time.Millisecond) }) // the app's work, not a synchronisation
	target := NewReplay(sources, deliverer(t, slow), from)
	runEngine(t, target)
	if pos, err := target.PositionWithLag(ctx); err != nil || pos.Lag == 0 {
		t.Fatalf("before: lag %d (%v); want the target behind", pos.Lag, err)
	}
	pos, err := target.CaughtUp(ctx)
	if err != nil || pos.Lag != 0 || total(pos.Next) != 200 {
		t.Fatalf("caught up: lag %d, at %v (%v); want lag 0 at the 200 committed", pos.Lag, pos.Next, err)
	}
}

// slowPollingTarget runs a target of group replaying both partitions from
// 0, whose replay polls the committed offsets only every maxWait/5.
func slowPollingTarget(t *testing.T, b *broker, group string, maxWait time.Duration) (*Engine, *Kafka) {
	slow := b.sources(group)
	slow.MaxWait = maxWait
	target := NewReplay(slow, deliverer(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})), map[int]int64{0: 0, 1: 0})
	runEngine(t, target)
	return target, slow
}

// TestCaughtUpDoesNotWaitForTheReplaysPoll: a target asked to catch up
// replays up to the committed offsets that answer read, not only up to
// those its replay's own, slower poll last saw. Here that poll comes every
// 20 s and saw nothing committed: the catch-up must not wait for the next.
func TestCaughtUpDoesNotWaitForTheReplaysPoll(t *testing.T) {
	b := startBroker(t, 2)
	b.produce(t, 0, 100)
	target, slow := slowPollingTarget(t, b, "slow-poll", 100*time.Second)
	slow.transport() // creates the poller
	expect.Eventually(t, "the replay's first poll of the committed offsets", func() error {
		slow.poll.mu.Lock()
		defer slow.poll.mu.Unlock()
		if slow.poll.last == nil {
			return fmt.Errorf("not polled yet")
		}
		return nil
	})
	source := NewLive(b.sources("slow-poll"), deliverer(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	runEngine(t, source)
	waitDelivered(t, source, 100)
	if n := target.Position().Delivered + target.Position().Replayed; n != 0 {
		t.Fatalf("the target replayed %d before the source committed anything; want 0 (the gate)", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // half the replay's poll interval
	defer cancel()
	pos, err := target.CaughtUp(ctx)
	if err != nil || pos.Lag != 0 || total(pos.Next) != 100 {
		t.Fatalf("caught up: lag %d, at %v (%v); want lag 0 at the 100 committed, without the replay's next poll", pos.Lag, pos.Next, err)
	}
}

// A target seen caught up follows the live member's commits closely on
// its own until the fence: what the source commits between the catch-up
// and the fence is replayed before the handover comes, not on its stall.
func TestACaughtUpTargetFollowsTheLiveMemberUntilTheFence(t *testing.T) {
	b := startBroker(t, 2)
	b.produce(t, 0, 100)
	target, _ := slowPollingTarget(t, b, "follow", 1000*time.Second)
	source := NewLive(b.sources("follow"), deliverer(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	runEngine(t, source)
	waitDelivered(t, source, 100)
	ctx, cancel := context.WithTimeout(context.Background(), expect.Timeout)
	defer cancel()
	if pos, err := target.CaughtUp(ctx); err != nil || pos.Lag != 0 {
		t.Fatalf("caught up: lag %d (%v); want 0", pos.Lag, err)
	}
	b.produce(t, 100, 5)
	waitDelivered(t, source, 105)
	expect.Eventually(t, "the target replayed them without another look and long before its next poll", func() error {
		if n := total(target.Position().Next); n != 105 {
			return fmt.Errorf("at %d of the 105 committed", n)
		}
		return nil
	})
}

// inFlightApp takes 50 ms per message (its work, not a synchronisation)
// and says when it started and finished each.
type inFlightApp struct {
	started chan struct{}
	mu      sync.Mutex
	done    time.Time
}

func (a *inFlightApp) ServeHTTP(http.ResponseWriter, *http.Request) {
	select {
	case a.started <- struct{}{}:
	default:
	}
	time.Sleep(50 * time.Millisecond)
	a.mu.Lock()
	a.done = time.Now()
	a.mu.Unlock()
}

func (a *inFlightApp) lastDone() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.done
}

// A message in flight when a pause or fence comes is not held up, and one
// arriving meanwhile would have waited for it anyway: the stall starts when
// that delivery ends, not when the call came.
func TestAStallStartsWhenTheDeliveryInFlightEnds(t *testing.T) {
	b := startBroker(t, 1)
	app := &inFlightApp{started: make(chan struct{}, 2)}
	e := NewLive(b.sources("in-flight"), deliverer(t, app))
	runEngine(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), expect.Timeout)
	defer cancel()
	for _, stop := range []string{"pause", "fence"} {
		b.produce(t, 0, 1)
		select {
		case <-app.started:
		case <-ctx.Done():
			t.Fatalf("%s: no delivery started", stop)
		}
		called := time.Now()
		var at *time.Time
		switch stop {
		case "pause":
			pos, err := e.Pause(ctx)
			if err != nil {
				t.Fatal(err)
			}
			at = pos.PausedAt
			mustResume(t, e)
		case "fence":
			pos, err := e.Fence(ctx)
			if err != nil {
				t.Fatal(err)
			}
			at = pos.FencedAt
		}
		done := app.lastDone()
		if at == nil || at.Before(done) || !done.After(called) {
			t.Fatalf("%s called at %s, the delivery in flight ended at %s: the stall starts at %v; want at or after the delivery's end",
				stop, called.Format(time.StampMicro), done.Format(time.StampMicro), at)
		}
	}
}

// replayClock takes 10 ms per replayed message (its work, not a
// synchronisation) and records when it finished the last replayed one and
// which offset it first received live.
type replayClock struct {
	mu         sync.Mutex
	lastReplay time.Time
	firstLive  int64
}

func (a *replayClock) ServeHTTP(_ http.ResponseWriter, r *http.Request) {
	off, _ := strconv.ParseInt(r.Header.Get(HeaderOffset), 10, 64)
	if r.Header.Get(HeaderReplay) == "true" {
		time.Sleep(10 * time.Millisecond)
		a.mu.Lock()
		a.lastReplay = time.Now()
		a.mu.Unlock()
		return
	}
	a.mu.Lock()
	if a.firstLive < 0 {
		a.firstLive = off
	}
	a.mu.Unlock()
}

// A handed-over target's group member joins while its replay runs the rest
// of the way to the fence, not after it: the join is off the handover's
// stall when the replay takes longer. It still delivers live from exactly F.
func TestATargetJoinsItsGroupWhileItReplaysToTheFence(t *testing.T) {
	c, b := startCluster(t, 1)
	var mu sync.Mutex
	var synced []time.Time
	c.ControlKey(int16(kmsg.SyncGroup), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		mu.Lock()
		synced = append(synced, time.Now())
		mu.Unlock()
		return nil, nil, false
	})
	sources := b.sources("overlap")
	sources.InstanceID = "orders-0"
	source := NewLive(sources, deliverer(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	runEngine(t, source)
	b.produce(t, 0, 30)
	waitDelivered(t, source, 30)
	ctx, cancel := context.WithTimeout(context.Background(), expect.Timeout)
	defer cancel()
	fenced, err := source.Fence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	before := len(synced)
	mu.Unlock()
	app := &replayClock{firstLive: -1}
	target := NewReplay(sources, deliverer(t, app), map[int]int64{0: 0})
	runEngine(t, target)
	live, err := target.Handover(ctx, fenced.Fence) // 30 messages of replay: 300 ms
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	joins := synced[before:]
	mu.Unlock()
	app.mu.Lock()
	lastReplay := app.lastReplay
	app.mu.Unlock()
	if len(joins) == 0 || !joins[0].Before(lastReplay) {
		t.Fatalf("the target's member synced at %v; the replay to the fence ended at %s: want the join during the replay", joins, lastReplay.Format(time.StampMicro))
	}
	if st := live.HandoverSteps; st == nil || st.Join > live.LiveAt.Sub(lastReplay) {
		t.Fatalf("handover steps %+v: want the join left after the replay no longer than from its end to live", st)
	}
	b.produce(t, 30, 1)
	expect.Eventually(t, "the target delivers live from F", func() error {
		app.mu.Lock()
		defer app.mu.Unlock()
		switch {
		case app.firstLive < 0:
			return errors.New("nothing live yet")
		case app.firstLive != fenced.Fence[0]:
			t.Fatalf("first live offset %d; want F = %d", app.firstLive, fenced.Fence[0])
		}
		return nil
	})
}

// A handover's member, joined while the replay still runs, reads nothing
// past the fence before the target is at it: what it fetched would hold
// the room the replay needs (one budget per sidecar), and with a budget
// smaller than a fetch per partition the handover would never finish.
func TestAPreparedMemberTakesNoRoomFromTheReplay(t *testing.T) {
	b := startBroker(t, 4)
	sources := b.sources("room")
	sources.InstanceID = "orders-0"
	source := NewLive(sources, deliverer(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	runEngine(t, source)
	b.produce(t, 0, 80)
	waitDelivered(t, source, 80)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fenced, err := source.Fence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b.produce(t, 80, 80) // past the fence, for the target's member to fetch
	tight := b.sources("room")
	tight.InstanceID, tight.BufferBytes = "orders-0", 1 // one fetch at a time
	from := map[int]int64{}
	for p := range fenced.Fence {
		from[p] = 0
	}
	slow := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { time.Sleep(2 * time.Millisecond) }) // the app's work
	target := NewReplay(tight, deliverer(t, slow), from)
	runEngine(t, target)
	live, err := target.Handover(ctx, fenced.Fence)
	if err != nil {
		t.Fatalf("handover with a one-fetch budget: %v (at %v, fence %v)", err, target.Position().Next, fenced.Fence)
	}
	if !maps.Equal(live.LiveFrom, fenced.Fence) {
		t.Fatalf("live from %v; want F %v", live.LiveFrom, fenced.Fence)
	}
}
