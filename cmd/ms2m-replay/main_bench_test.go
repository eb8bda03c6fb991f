package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ms2m/ms2m/internal/expect"
	"github.com/ms2m/ms2m/internal/testenv"
	"github.com/ms2m/ms2m/pkg/replay"
)

// BenchmarkResidentMemory runs the real ms2m-replay binary as a process
// against a Kafka-protocol broker and a no-op app, under a steady 1,000
// messages/s, and reads its resident memory (VmRSS in /proc/PID/status).
// Each iteration is one second of traffic; the figure is the largest sample
// after a warm-up, with VmHWM (the peak since start) beside it. Run it with
// -benchtime 10x.
func BenchmarkResidentMemory(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "ms2m-replay")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("building ms2m-replay: %v\n%s", err, out)
	}
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) { benchResidentMemory(b, bin, batch) })
	}
}

func benchResidentMemory(b *testing.B, bin string, batch int) {
	const topic, rate = "orders", 1000
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topic))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	brokerAddr := c.ListenAddrs()[0]

	var acked atomic.Int64
	app := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		n := int64(1)
		if v := r.Header.Get(replay.HeaderBatchSize); v != "" {
			n, _ = strconv.ParseInt(v, 10, 64)
		}
		_, _ = io.Copy(io.Discard, r.Body)
		acked.Add(n)
	}))
	defer app.Close()
	_, appPort, _ := net.SplitHostPort(app.Listener.Addr().String())
	port := func() string { _, p, _ := net.SplitHostPort(testenv.FreeAddr(b)); return p }

	// The control API checks tokens against the issuer keys it reads from
	// the API server on the first call; none is made here, so the API
	// server the kubeconfig names need not exist.
	kubeconfig := filepath.Join(b.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {token: none}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
`), 0o600); err != nil {
		b.Fatal(err)
	}
	metricsPort := port()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"KUBECONFIG="+kubeconfig,
		replay.EnvBrokers+"="+brokerAddr, replay.EnvTopic+"="+topic, replay.EnvGroup+"=rss",
		replay.EnvAppPort+"="+appPort, replay.EnvDeliveryPath+"=/", replay.EnvPodIP+"=127.0.0.1",
		replay.EnvPodNamespace+"=bench", replay.EnvPodUID+"=1234", replay.EnvControlPort+"="+port(), replay.EnvMetricsPort+"="+metricsPort,
		replay.EnvAppBatchSize+"="+strconv.Itoa(batch),
	)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}()

	// Steady traffic: 1,000 messages/s of 100 bytes, in 10 ms batches.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var produced atomic.Int64
	go func() {
		w := &kafka.Writer{Addr: kafka.TCP(brokerAddr), Topic: topic, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll}
		defer func() { _ = w.Close() }()
		value := []byte(strings.Repeat("x", 100))
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			msgs := make([]kafka.Message, rate/100)
			for i := range msgs {
				msgs[i] = kafka.Message{Key: []byte("k"), Value: value}
			}
			if err := w.WriteMessages(ctx, msgs...); err == nil {
				produced.Add(int64(len(msgs)))
			}
		}
	}()
	expect.Eventually(b, "the sidecar delivering", func() error {
		if acked.Load() < 2*rate {
			return fmt.Errorf("%d delivered", acked.Load())
		}
		return nil
	})

	var peak vm
	startAcked := acked.Load()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for b.Loop() {
		<-tick.C // one second of traffic per sample
		m, err := memory(cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		if m.rss > peak.rss {
			peak = m
		}
	}
	if lag := produced.Load() - acked.Load(); lag > rate {
		b.Fatalf("the sidecar fell behind by %d messages: not a steady state", lag)
	}
	b.ReportMetric(float64(peak.rss)/(1<<20), "RSS-MiB")
	b.ReportMetric(float64(peak.anon)/(1<<20), "anon-MiB")
	b.ReportMetric(float64(peak.file)/(1<<20), "file-MiB")
	b.ReportMetric(float64(peak.hwm)/(1<<20), "HWM-MiB")
	b.ReportMetric(float64(acked.Load()-startAcked)/b.Elapsed().Seconds(), "msg/s")
}

// vm is a process's memory as /proc/PID/status reports it, in bytes: the
// resident set, its anonymous (heap, stacks) and file-backed (the binary's
// pages) parts, and the peak resident set since start.
type vm struct{ rss, anon, file, hwm int64 }

func memory(pid int) (vm, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return vm{}, err
	}
	defer func() { _ = f.Close() }()
	var m vm
	fields := map[string]*int64{"VmRSS": &m.rss, "RssAnon": &m.anon, "RssFile": &m.file, "VmHWM": &m.hwm}
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, _ := strings.Cut(s.Text(), ":")
		dst, ok := fields[k]
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return vm{}, fmt.Errorf("%s: %q: %w", k, v, err)
		}
		*dst = kb << 10
	}
	return m, s.Err()
}
