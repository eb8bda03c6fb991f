package replay

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/ms2m/ms2m/internal/expect"
)

// commitAll commits offset for each of partitions as a group with no
// members (what the live member would have committed).
func (b *broker) commitAll(t testing.TB, group string, partitions int, offset int64) {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(b.addr), Timeout: 10 * time.Second}
	var offs []kafka.OffsetCommit
	for p := range partitions {
		offs = append(offs, kafka.OffsetCommit{Partition: p, Offset: offset})
	}
	resp, err := c.OffsetCommit(context.Background(), &kafka.OffsetCommitRequest{GroupID: group, GenerationID: -1,
		Topics: map[string][]kafka.OffsetCommit{topic: offs}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			t.Fatalf("committing: %v", p.Error)
		}
	}
}

// A message larger than a fetch (fetchBytes, 1 MiB) is delivered whole, in
// order, by the replay source and by the static member: the broker returns
// a record batch larger than the fetch's maximum when it is the first.
func TestMessageLargerThanAFetchIsDelivered(t *testing.T) {
	const n, size = 3, 3 << 20
	b := startBrokerWith(t, 1, largeMessages)
	b.produceLarge(t, n, size)
	b.commitAll(t, "large", 1, n)
	ctx, cancel := context.WithTimeout(context.Background(), expect.Timeout)
	defer cancel()
	replay := b.sources("large").Replay(map[int]int64{0: 0})
	defer func() { _ = replay.Close() }()
	static := b.sources("large-live")
	static.InstanceID = "large-0"
	live := static.Live()
	defer func() { _ = live.Close() }()
	for name, src := range map[string]Source{"replay": replay, "static member": live} {
		for i := range n {
			m, err := src.FetchMessage(ctx)
			if err != nil {
				t.Fatalf("%s: fetching message %d: %v", name, i, err)
			}
			if m.Offset != int64(i) || len(m.Value) != size || !strings.HasPrefix(string(m.Value), strconv.Itoa(i)+":") {
				t.Fatalf("%s: got offset %d, %d bytes starting %q; want offset %d, %d bytes", name, m.Offset, len(m.Value), m.Value[:4], i, size)
			}
		}
	}
}

// What a source holds of fetched messages the engine has not taken is
// bounded by BufferBytes over all partitions (plus one fetch), however
// many partitions have messages waiting; taken, they all arrive, in order
// per partition.
func TestFetchedBytesAreBoundedAcrossPartitions(t *testing.T) {
	const partitions, perPartition, size, limit = 16, 2, 1 << 20, 4 << 20
	b := startBrokerWith(t, partitions, largeMessages)
	b.produceLarge(t, partitions*perPartition, size)
	k := b.sources("bounded")
	k.InstanceID, k.BufferBytes = "bounded-0", limit
	src := k.Live()
	defer func() { _ = src.Close() }()
	expect.Eventually(t, "the budget used up", func() error {
		if held := k.buffer().held(); held < limit {
			return fmt.Errorf("%d bytes held", held)
		}
		return nil
	})
	// Every pump has had time to fetch if it could (16 MiB are waiting).
	time.Sleep(200 * time.Millisecond)
	if held, most := k.buffer().held(), int64(limit+2*fetchBytes); held > most {
		t.Fatalf("%d bytes held; want at most %d", held, most)
	}
	ctx, cancel := context.WithTimeout(context.Background(), expect.Timeout)
	defer cancel()
	next := map[int]int64{}
	for i := range partitions * perPartition {
		m, err := src.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("message %d: %v (taken so far: %v, %d bytes held)", i, err, next, k.buffer().held())
		}
		if m.Offset != next[m.Partition] || len(m.Value) != size {
			t.Fatalf("partition %d: offset %d (%d bytes); want offset %d", m.Partition, m.Offset, len(m.Value), next[m.Partition])
		}
		next[m.Partition]++
	}
}

// A control call may wait longer than the server's read and write
// timeouts (a pause waits for the app's in-flight message): the call's
// connection deadlines follow its own timeout.
func TestControlCallOutlastsServerTimeouts(t *testing.T) {
	ctl := &Control{Auth: staticAuth{token: "manager", user: DefaultAllowedUser}, AllowedUsers: sets.New(DefaultAllowedUser)}
	srv := httptest.NewUnstartedServer(ctl.authorized(manager, func(ctx context.Context, _ Call) (Position, error) {
		select {
		case <-time.After(500 * time.Millisecond): // a slow app
			return Position{Mode: ModeFenced}, nil
		case <-ctx.Done():
			return Position{}, ctx.Err()
		}
	}))
	srv.Config.ReadTimeout, srv.Config.WriteTimeout = 100*time.Millisecond, 100*time.Millisecond
	srv.Start()
	defer srv.Close()
	status, body := controlClient{t: t, srv: srv, token: "manager"}.call(http.MethodPost, "/", `{"timeoutSeconds":5}`)
	if status != http.StatusOK || !strings.Contains(body, `"mode":"fenced"`) {
		t.Fatalf("a call of 500 ms on a server with 100 ms timeouts = %d %q; want 200", status, body)
	}
}
