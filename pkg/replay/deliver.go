package replay

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
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
)

// Deliverer POSTs messages to the app and retries until it answers 2xx.
type Deliverer struct {
	// URL is the app's delivery endpoint, e.g. http://<pod IP>:8080/messages.
	URL    string
	Client *http.Client
	// BatchSize above 1 is the app's opt-in to batches: the engine gathers
	// up to BatchSize messages and they are POSTed together as a Batch (see
	// batch.go). 0 or 1: one message per POST, the body being its value.
	BatchSize int
	// MinBackoff and MaxBackoff bound the wait between attempts (defaults:
	// 10 ms and 5 s).
	MinBackoff, MaxBackoff time.Duration
	// OnAppError is called for each failed attempt (metrics, logs) with the
	// first message of what was being delivered.
	OnAppError func(kafka.Message, error)
}

func (d *Deliverer) batchSize() int {
	if d == nil || d.BatchSize < 1 {
		return 1
	}
	return d.BatchSize
}

// Deliver returns nil once the app acknowledged m with 2xx, or ctx's error.
// It never gives up on a message by itself: skipping one would lose it.
func (d *Deliverer) Deliver(ctx context.Context, m kafka.Message, replayed bool) error {
	return d.retry(ctx, m, func() error { return d.post(ctx, m, replayed) })
}

// DeliverBatch POSTs msgs as one Batch and returns nil once the app
// acknowledged the whole batch with 2xx, or ctx's error. A failed batch is
// retried whole, so an app that fails half-way sees the applied part again
// (it can skip offsets it has already applied).
func (d *Deliverer) DeliverBatch(ctx context.Context, msgs []kafka.Message, replayed bool) error {
	body, err := encodeBatch(msgs, replayed)
	if err != nil {
		return fmt.Errorf("encoding a batch: %w", err)
	}
	return d.retry(ctx, msgs[0], func() error { return d.postBatch(ctx, msgs, body, replayed) })
}

// deliverAll delivers msgs in the app's format: a Batch when it opted in,
// otherwise one POST each.
func (d *Deliverer) deliverAll(ctx context.Context, msgs []kafka.Message, replayed bool) error {
	if d.batchSize() > 1 {
		return d.DeliverBatch(ctx, msgs, replayed)
	}
	for _, m := range msgs {
		if err := d.Deliver(ctx, m, replayed); err != nil {
			return err
		}
	}
	return nil
}

func (d *Deliverer) retry(ctx context.Context, first kafka.Message, attempt func() error) error {
	backoff, maxBackoff := d.MinBackoff, d.MaxBackoff
	if backoff <= 0 {
		backoff = 10 * time.Millisecond
	}
	if maxBackoff < backoff {
		maxBackoff = max(backoff, 5*time.Second)
	}
	for {
		err := attempt()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if d.OnAppError != nil {
			d.OnAppError(first, err)
		}
		if !sleepCtx(ctx, jitter(backoff)) {
			return ctx.Err()
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// sleepCtx waits for d or ctx's end; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (d *Deliverer) post(ctx context.Context, m kafka.Message, replayed bool) error {
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
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("app answered %s", resp.Status)
	}
	return nil
}
