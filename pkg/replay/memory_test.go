package replay

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ms2m/ms2m/internal/expect"
)

// Memory of a sidecar reading many partitions of large messages for a slow
// app: the sidecar runs as a child process (this test binary again, running
// TestSidecarMemoryChild), so the broker's log (in this process) does not
// count, and the kernel's peak resident set (VmHWM) is the sidecar's own.
const (
	memPartitions = 64
	memPerPart    = 4
	memValueBytes = 1 << 20
	envMemChild   = "MS2M_TEST_MEMORY_CHILD"
)

// BenchmarkSidecarMemory64x1MiB runs a sidecar (Run, the real path) on 64
// partitions each holding 4 messages of 1 MiB, for an app that takes 5 ms
// per message, live (a static member) and replaying from offset 0 behind a
// group that committed everything. It reports the child's peak resident
// memory (VmHWM) and its peak heap (sampled every 5 ms). Run it with
// -benchtime 1x.
func BenchmarkSidecarMemory64x1MiB(b *testing.B) {
	for _, mode := range []string{"live", "replay"} {
		b.Run(mode, func(b *testing.B) {
			for range b.N {
				rss, heap := sidecarMemory(b, mode)
				b.ReportMetric(rss, "peak-RSS-MiB")
				b.ReportMetric(heap, "peak-heap-MiB")
			}
		})
	}
}

// startBrokerWith is startBroker with more options (larger messages).
func startBrokerWith(t testing.TB, partitions int32, opts ...kfake.Opt) *broker {
	t.Helper()
	_, b := startCluster(t, partitions, opts...)
	return b
}

// largeMessages lets the broker take messages of a few MiB.
var largeMessages = kfake.BrokerConfigs(map[string]string{"message.max.bytes": strconv.Itoa(8 << 20)})

// produceLarge writes n messages of size bytes, round robin over the
// topic's partitions; value i starts with "i:".
func (b *broker) produceLarge(t testing.TB, n, size int) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(b.addr), Topic: topic, Balancer: &kafka.RoundRobin{}, BatchTimeout: time.Millisecond,
		BatchBytes: int64(2*size + 1<<20), RequiredAcks: kafka.RequireAll}
	defer func() { _ = w.Close() }()
	for i := range n {
		v := make([]byte, size)
		copy(v, strconv.Itoa(i)+":")
		if err := w.WriteMessages(context.Background(), kafka.Message{Key: []byte("k"), Value: v}); err != nil {
			t.Fatalf("producing: %v", err)
		}
	}
}

// sidecarMemory returns the child sidecar's peak RSS and peak heap in MiB.
func sidecarMemory(b *testing.B, mode string) (float64, float64) {
	br := startBrokerWith(b, memPartitions, largeMessages)
	br.produceLarge(b, memPartitions*memPerPart, memValueBytes)
	const group = "memory"
	from := map[string]int64{}
	if mode == "replay" {
		// The live member has processed everything: replay holds nothing
		// back.
		br.commitAll(b, group, memPartitions, memPerPart)
		for p := range memPartitions {
			from[strconv.Itoa(p)] = 0
		}
	}
	var acked atomic.Int64
	app := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		time.Sleep(5 * time.Millisecond)
		acked.Add(1)
	}))
	defer app.Close()
	_, appPort, _ := net.SplitHostPort(app.Listener.Addr().String())

	heapFile := filepath.Join(b.TempDir(), "heap")
	cmd := exec.Command(os.Args[0], "-test.run=^TestSidecarMemoryChild$", "-test.bench=^$")
	env := map[string]string{EnvBrokers: br.addr, EnvTopic: topic, EnvGroup: group, EnvPodIP: "127.0.0.1", EnvPodNamespace: "bench", EnvPodUID: "1234",
		EnvAppPort: appPort, EnvDeliveryPath: "/", EnvControlPort: freePort(b), EnvMetricsPort: freePort(b),
		envMemChild: heapFile, EnvMemoryLimit: strconv.Itoa(64 << 20)} // the webhook's default limit
	if mode == "live" {
		env[EnvGroupInstanceID] = "memory-0"
	} else {
		v, _ := json.Marshal(from)
		env[EnvReplayFrom] = string(v)
	}
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}()
	expect.Eventually(b, "all delivered", func() error {
		if n := acked.Load(); n < memPartitions*memPerPart {
			return fmt.Errorf("%d of %d", n, memPartitions*memPerPart)
		}
		return nil
	})
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	var rssKiB float64
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			rssKiB, _ = strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
		}
	}
	heap, err := os.ReadFile(heapFile)
	if err != nil {
		b.Fatal(err)
	}
	heapBytes, _ := strconv.ParseFloat(strings.TrimSpace(string(heap)), 64)
	return rssKiB / 1024, heapBytes / (1 << 20)
}

func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	_, p, _ := net.SplitHostPort(l.Addr().String())
	return p
}

// TestSidecarMemoryChild is the sidecar process of
// BenchmarkSidecarMemory64x1MiB; it does nothing unless started by it.
func TestSidecarMemoryChild(t *testing.T) {
	heapFile := os.Getenv(envMemChild)
	if heapFile == "" {
		t.Skip("run by BenchmarkSidecarMemory64x1MiB")
	}
	o, err := OptionsFromEnv(os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Peak heap: live objects and what the GC has not yet swept, sampled.
	go func() {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		var peak uint64
		for ctx.Err() == nil {
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > peak {
				peak = v
				_ = os.WriteFile(heapFile, []byte(strconv.FormatUint(peak, 10)), 0o600)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	if err := Run(ctx, o, staticAuth{token: "manager", user: DefaultAllowedUser}); err != nil {
		t.Fatal(err)
	}
}
