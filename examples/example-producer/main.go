// Command example-producer writes numbered messages (the value is the
// sequence number, the key one of --keys) to a topic at a fixed rate. It
// continues the numbering from the messages already in the topic, so a
// restarted producer never writes a sequence number twice.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
)

func main() {
	brokers := flag.String("brokers", os.Getenv("BROKERS"), "Comma-separated host:port list (env BROKERS).")
	topic := flag.String("topic", os.Getenv("TOPIC"), "Topic to write (env TOPIC).")
	rate := flag.Float64("rate", 10, "Messages per second.")
	count := flag.Int64("count", 0, "Stop after this many messages; 0 runs until stopped.")
	keys := flag.Int("keys", 16, "Number of distinct keys.")
	flag.Parse()
	if err := run(*brokers, *topic, *rate, *count, *keys); err != nil {
		fmt.Fprintln(os.Stderr, "example-producer:", err)
		os.Exit(1)
	}
}

func run(brokers, topic string, rate float64, count int64, keys int) error {
	switch {
	case brokers == "":
		return fmt.Errorf("--brokers (env BROKERS) is required")
	case topic == "":
		return fmt.Errorf("--topic (env TOPIC) is required")
	case rate <= 0:
		return fmt.Errorf("--rate must be positive, got %v", rate)
	case keys < 1:
		return fmt.Errorf("--keys must be at least 1, got %d", keys)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	addrs := strings.Split(brokers, ",")
	next, err := existing(ctx, addrs, topic)
	if err != nil {
		return err
	}
	w := &kafka.Writer{Addr: kafka.TCP(addrs...), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond, AllowAutoTopicCreation: true}
	defer func() { _ = w.Close() }()
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	report := time.Now()
	start := next
	log.Printf("writing to %s at %v msg/s from seq %d", topic, rate, next)
	for count == 0 || next-start < count {
		select {
		case <-ctx.Done():
			log.Printf("stopped after seq %d", next-1)
			return nil
		case <-tick.C:
		}
		m := kafka.Message{Key: fmt.Appendf(nil, "k%03d", next%int64(keys)), Value: fmt.Appendf(nil, "%d", next)}
		if err := w.WriteMessages(ctx, m); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("writing seq %d: %w", next, err)
		}
		next++
		if time.Since(report) > 5*time.Second {
			log.Printf("written up to seq %d", next-1)
			report = time.Now()
		}
	}
	log.Printf("done: %d messages, last seq %d", next-start, next-1)
	return nil
}

// existing counts the messages already in topic (0 when it does not exist).
func existing(ctx context.Context, brokers []string, topic string) (int64, error) {
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	meta, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, fmt.Errorf("reaching the brokers %v: %w", brokers, err)
	}
	if len(meta.Topics) != 1 || meta.Topics[0].Error != nil {
		return 0, nil
	}
	var reqs []kafka.OffsetRequest
	for _, p := range meta.Topics[0].Partitions {
		reqs = append(reqs, kafka.LastOffsetOf(p.ID))
	}
	offs, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return 0, err
	}
	var n int64
	for _, p := range offs.Topics[topic] {
		n += p.LastOffset
	}
	return n, nil
}
