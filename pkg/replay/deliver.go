package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// Headers the app receives with every message (the key's and the record
// headers' forms are in encoding.go).
const (
	HeaderTopic     = "Ms2m-Topic"
	HeaderPartition = "Ms2m-Partition"
	HeaderOffset    = "Ms2m-Offset"
	// HeaderKey carries a plain key as-is; see SetKey and KeyFrom.
	HeaderKey = "Ms2m-Key"
	// HeaderReplay is "true" on messages replayed on a migration target: the
	// app rebuilds its state from them and should suppress side effects.
	HeaderReplay = "Ms2m-Replay"
	// HeaderPrefix precedes the name of a record header whose name is an
	// HTTP token and whose value is plain, a convenience: the exact list
	// of all of them is HeaderRecordHeaders (see HeadersFrom).
	HeaderPrefix = "Ms2m-Header-"
	// HeaderPreviousOffset is the offset of the message of this partition
	// the app acknowledged last, as far as the sidecar knows (after a
	// message dead-lettered, the one before it; absent when unknown). An
	// app whose state has not reached it lost state.
	HeaderPreviousOffset = "Ms2m-Previous-Offset"
	// HeaderNextOffset, on an app's 409 Conflict, is the next offset its
	// state has not seen, as "<offset>" (the message's partition) or
	// "<partition>:<offset>" (a batch): an app that lost state, such as a
	// restored container restarted from its checkpoint image, asks the
	// sidecar to replay from there (see Engine.rewind).
	HeaderNextOffset = "Ms2m-Next-Offset"
)

// DefaultMaxAttempts is how many times a message the app refuses is
// delivered before the sidecar gives up on it (ms2m.io/max-delivery-attempts).
const DefaultMaxAttempts = 5

// MaxDeliveryAttempts bounds ms2m.io/max-delivery-attempts.
const MaxDeliveryAttempts = 100

// Deliverer POSTs messages to the app and retries until it answers 2xx.
type Deliverer struct {
	// URL is the app's delivery endpoint, e.g. http://<pod IP>:8080/messages.
	URL    string
	Client *http.Client
	// QuiesceURL, when set, is where the app is told, at a pause, that its
	// container is checkpointed next (see Quiesce).
	QuiesceURL string
	// BatchSize above 1 is the app's opt-in to batches: the engine gathers
	// up to BatchSize messages and they are POSTed together as a Batch (see
	// batch.go). 0 or 1: one message per POST, the body being its value.
	BatchSize int
	// MinBackoff and MaxBackoff bound the wait between attempts (defaults:
	// 10 ms and 5 s).
	MinBackoff, MaxBackoff time.Duration
	// MaxAttempts bounds the deliveries of a message the app refuses (an
	// answer other than 2xx, 409 with HeaderNextOffset, 429 and 502-504):
	// after that many the delivery fails with a *PoisonError (default
	// DefaultMaxAttempts). An app that does not answer, or answers that it
	// is unavailable, is retried without bound: it is restarting, and the
	// message is not at fault.
	MaxAttempts int
	// OnAppError is called for each failed attempt (metrics, logs) with the
	// first message of what was being delivered.
	OnAppError func(kafka.Message, error)
}

// AppError is an app's answer other than 2xx.
type AppError struct {
	Status int
	// Body is the start of the answer's body, the app's explanation.
	Body string
	// Partition and Next are a 409's HeaderNextOffset (Next -1: none).
	Partition int
	Next      int64
}

func (e *AppError) Error() string {
	msg := fmt.Sprintf("app answered %d %s", e.Status, http.StatusText(e.Status))
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// transient reports whether the answer says the app is unavailable rather
// than refusing the message.
func (e *AppError) transient() bool {
	switch e.Status {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// PoisonError is a message the app refused MaxAttempts times.
type PoisonError struct {
	Message  kafka.Message
	Attempts int
	Err      *AppError
}

func (e *PoisonError) Error() string {
	return fmt.Sprintf("%s/%d@%d refused %d times, last: %v", e.Message.Topic, e.Message.Partition, e.Message.Offset, e.Attempts, e.Err)
}

// errInterrupted stops a retry between attempts: the engine is pausing or
// fencing, and delivers the message again afterwards if it still should.
var errInterrupted = errors.New("delivery interrupted by a pause or fence")

// appPosition is what the engine knows of the app's position.
type appPosition interface {
	// previous is the offset of the message of m's partition the app
	// acknowledged last before m, -1 when unknown.
	previous(m kafka.Message) int64
	// rewind replays partition p over [from, to) to the app, marked as
	// replay, and reports whether it delivered or passed over anything.
	rewind(ctx context.Context, stop <-chan struct{}, p int, from, to int64) (bool, error)
}

func previousOf(ap appPosition, m kafka.Message) int64 {
	if ap == nil {
		return -1
	}
	return ap.previous(m)
}

func (d *Deliverer) batchSize() int {
	if d == nil || d.BatchSize < 1 {
		return 1
	}
	return d.BatchSize
}

// Deliver returns nil once the app acknowledged m with 2xx, a *PoisonError
// once it refused m MaxAttempts times, or ctx's error.
func (d *Deliverer) Deliver(ctx context.Context, m kafka.Message, replayed bool) error {
	return d.deliverOne(ctx, nil, nil, m, replayed)
}

func (d *Deliverer) deliverOne(ctx context.Context, stop <-chan struct{}, ap appPosition, m kafka.Message, replayed bool) error {
	return d.retry(ctx, stop, ap, []kafka.Message{m}, func() error { return d.post(ctx, m, replayed, previousOf(ap, m)) })
}

// DeliverBatch POSTs msgs as one Batch and returns nil once the app
// acknowledged the whole batch with 2xx, a *PoisonError once it refused it
// MaxAttempts times, or ctx's error. A failed batch is retried whole, so an
// app that fails half-way sees the applied part again (it can skip offsets
// it has already applied).
func (d *Deliverer) DeliverBatch(ctx context.Context, msgs []kafka.Message, replayed bool) error {
	return d.deliverBatch(ctx, nil, nil, msgs, replayed)
}

func (d *Deliverer) deliverBatch(ctx context.Context, stop <-chan struct{}, ap appPosition, msgs []kafka.Message, replayed bool) error {
	return d.retry(ctx, stop, ap, msgs, func() error {
		body, err := encodeBatch(msgs, replayed, func(m kafka.Message) int64 { return previousOf(ap, m) })
		if err != nil {
			return fmt.Errorf("encoding a batch: %w", err)
		}
		return d.postBatch(ctx, msgs, body, replayed)
	})
}

// retry makes attempts until one succeeds. Between attempts it backs off,
// and stops with errInterrupted when stop closes. An app that asks for a
// rewind (409 with HeaderNextOffset) is given it through ap and the attempt
// is made again at once; a rewind that finds nothing, or the same answer
// after one, counts as a refusal.
func (d *Deliverer) retry(ctx context.Context, stop <-chan struct{}, ap appPosition, msgs []kafka.Message, attempt func() error) error {
	first := msgs[0]
	backoff, maxBackoff := d.MinBackoff, d.MaxBackoff
	if backoff <= 0 {
		backoff = 10 * time.Millisecond
	}
	if maxBackoff < backoff {
		maxBackoff = max(backoff, 5*time.Second)
	}
	maxAttempts := d.MaxAttempts
	if maxAttempts <= 0 {
		maxAttempts = DefaultMaxAttempts
	}
	refused := 0
	rewound := map[int]int64{} // per partition, the app's Next at the last rewind
	for {
		err := attempt()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var app *AppError
		if errors.As(err, &app) && app.Next >= 0 && ap != nil {
			last, again := rewound[app.Partition]
			if to, ok := firstOffset(msgs, app.Partition); ok && app.Next < to && (!again || app.Next > last) {
				rewound[app.Partition] = app.Next // the same answer after a rewind: another cannot help
				progress, rerr := ap.rewind(ctx, stop, app.Partition, app.Next, to)
				if rerr != nil {
					return rerr
				}
				if progress {
					continue // the app has what it missed: deliver again at once
				}
			}
		}
		if d.OnAppError != nil {
			d.OnAppError(first, err)
		}
		if app != nil && !app.transient() {
			if refused++; refused >= maxAttempts {
				return &PoisonError{Message: first, Attempts: refused, Err: app}
			}
		}
		select {
		case <-stop:
			return errInterrupted
		default:
		}
		if !sleepStop(ctx, stop, jitter(backoff)) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return errInterrupted
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// firstOffset is the offset of msgs' first message of partition p.
func firstOffset(msgs []kafka.Message, p int) (int64, bool) {
	for _, m := range msgs {
		if m.Partition == p {
			return m.Offset, true
		}
	}
	return 0, false
}

// sleepCtx waits for d or ctx's end; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	return sleepStop(ctx, nil, d)
}

// sleepStop waits for d, ctx's end or stop; it reports whether d elapsed.
func sleepStop(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	case <-t.C:
		return true
	}
}

func (d *Deliverer) post(ctx context.Context, m kafka.Message, replayed bool, previous int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URL, bytes.NewReader(m.Value))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set(HeaderTopic, m.Topic)
	req.Header.Set(HeaderPartition, strconv.Itoa(m.Partition))
	req.Header.Set(HeaderOffset, strconv.FormatInt(m.Offset, 10))
	SetKey(req.Header, m.Key)
	SetHeaders(req.Header, m.Headers)
	if replayed {
		req.Header.Set(HeaderReplay, "true")
	}
	if previous >= 0 {
		req.Header.Set(HeaderPreviousOffset, strconv.FormatInt(previous, 10))
	}
	if err := d.do(req); err != nil {
		return fmt.Errorf("%w for %s/%d@%d", err, m.Topic, m.Partition, m.Offset)
	}
	return nil
}

func (d *Deliverer) postBatch(ctx context.Context, msgs []kafka.Message, body []byte, replayed bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", BatchContentType)
	req.Header.Set(HeaderBatchSize, strconv.Itoa(len(msgs)))
	if replayed {
		req.Header.Set(HeaderReplay, "true")
	}
	if err := d.do(req); err != nil {
		first, last := msgs[0], msgs[len(msgs)-1]
		return fmt.Errorf("%w for a batch of %d (%s/%d@%d … %d@%d)", err, len(msgs), first.Topic, first.Partition, first.Offset, last.Partition, last.Offset)
	}
	return nil
}

func (d *Deliverer) do(req *http.Request) error {
	client := d.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	app := &AppError{Status: resp.StatusCode, Body: strings.TrimSpace(strings.ToValidUTF8(string(body), "?")), Next: -1}
	if v := resp.Header.Get(HeaderNextOffset); resp.StatusCode == http.StatusConflict && v != "" {
		app.Partition, app.Next = parseNextOffset(v, req.Header.Get(HeaderPartition))
	}
	return app
}

// parseNextOffset reads HeaderNextOffset: "<offset>" for the partition of
// a single message, or "<partition>:<offset>". A malformed value gives
// Next -1 (no rewind: the answer counts as a refusal).
func parseNextOffset(v, partition string) (int, int64) {
	if p, o, ok := strings.Cut(v, ":"); ok {
		partition, v = p, o
	}
	p, err1 := strconv.Atoi(strings.TrimSpace(partition))
	o, err2 := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err1 != nil || err2 != nil || p < 0 || o < 0 {
		return 0, -1
	}
	return p, o
}
