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

// Headers the app receives with every message.
const (
	HeaderTopic     = "Ms2m-Topic"
	HeaderPartition = "Ms2m-Partition"
	HeaderOffset    = "Ms2m-Offset"
	HeaderKey       = "Ms2m-Key"
	// HeaderReplay is "true" on messages replayed on a migration target: the
	// app rebuilds its state from them and should suppress side effects.
	HeaderReplay = "Ms2m-Replay"
	// HeaderPrefix precedes the Kafka record headers.
	HeaderPrefix = "Ms2m-Header-"
)

// Deliverer POSTs messages to the app and retries until it answers 2xx.
type Deliverer struct {
	// URL is the app's delivery endpoint, e.g. http://<pod IP>:8080/messages.
	URL    string
	Client *http.Client
	// MinBackoff and MaxBackoff bound the wait between attempts (defaults:
	// 10 ms and 5 s).
	MinBackoff, MaxBackoff time.Duration
	// OnAppError is called for each failed attempt (metrics, logs).
	OnAppError func(kafka.Message, error)
}

// Deliver returns nil once the app acknowledged m with 2xx, or ctx's error.
// It never gives up on a message by itself: skipping one would lose it.
func (d *Deliverer) Deliver(ctx context.Context, m kafka.Message, replayed bool) error {
	backoff, maxBackoff := d.MinBackoff, d.MaxBackoff
	if backoff <= 0 {
		backoff = 10 * time.Millisecond
	}
	if maxBackoff < backoff {
		maxBackoff = max(backoff, 5*time.Second)
	}
	for {
		err := d.post(ctx, m, replayed)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if d.OnAppError != nil {
			d.OnAppError(m, err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
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
	if m.Key != nil {
		req.Header.Set(HeaderKey, string(m.Key))
	}
	if replayed {
		req.Header.Set(HeaderReplay, "true")
	}
	for _, h := range m.Headers {
		req.Header.Add(HeaderPrefix+h.Key, string(h.Value))
	}
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
		return fmt.Errorf("app answered %s for %s/%d@%d", resp.Status, m.Topic, m.Partition, m.Offset)
	}
	return nil
}
