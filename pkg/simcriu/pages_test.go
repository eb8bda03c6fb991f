package simcriu

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

const envBallast = "SIMCRIU_TEST_BALLAST_MIB"

// TestMain lets the test binary stand in for an app holding a given amount
// of memory: with envBallast set it touches that many MiB and waits.
func TestMain(m *testing.M) {
	if v := os.Getenv(envBallast); v != "" {
		mib, _ := strconv.Atoi(v)
		ballast := make([]byte, mib<<20)
		for i := 0; i < len(ballast); i += pageSize {
			ballast[i] = byte(i)
		}
		fmt.Println("ready")
		_, _ = io.Copy(io.Discard, os.Stdin) // until the test closes it
		_ = ballast[len(ballast)-1]
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startBallast runs a process holding mib MiB, in its own process group.
func startBallast(tb testing.TB, mib int) int {
	tb.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envBallast+"="+strconv.Itoa(mib))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = stdin.Close(); _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGCONT); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		tb.Fatalf("ballast process: %q, %v", line, err)
	}
	return cmd.Process.Pid
}

// The dump copies what the process holds: its image grows with its
// resident memory, as CRIU's pages-*.img does.
func TestDumpPagesFollowsResidentMemory(t *testing.T) {
	sizes := map[int]int64{}
	for _, mib := range []int{8, 64} {
		pid := startBallast(t, mib)
		thaw, err := Frozen(pid)
		if err != nil {
			t.Fatal(err)
		}
		n, err := DumpPages(pid, io.Discard)
		thaw()
		if err != nil {
			t.Fatal(err)
		}
		if n < int64(mib)<<20 {
			t.Fatalf("a process holding %d MiB dumped %d bytes", mib, n)
		}
		sizes[mib] = n
	}
	// Each process also holds its runtime's own pages (stacks, GC
	// metadata), which vary by a few pages from one process to the next:
	// the difference is 56 MiB give or take 1 MiB below and the ballast's
	// GC bookkeeping above.
	if grew := sizes[64] - sizes[8]; grew < 55<<20 || grew > 72<<20 {
		t.Errorf("56 MiB more resident memory made the dump %d bytes larger", grew)
	}
}

// BenchmarkDumpPages measures the simulated dump (freeze, copy the
// resident pages, thaw) of a process holding 16, 64 and 256 MiB: the
// checkpoint's memory-dependent cost in the sandbox.
func BenchmarkDumpPages(b *testing.B) {
	dir := b.TempDir()
	for _, mib := range []int{16, 64, 256} {
		b.Run(fmt.Sprintf("%dMiB", mib), func(b *testing.B) {
			pid := startBallast(b, mib)
			var n int64
			start := time.Now()
			for b.Loop() {
				f, err := os.CreateTemp(dir, "pages")
				if err != nil {
					b.Fatal(err)
				}
				thaw, err := Frozen(pid)
				if err != nil {
					b.Fatal(err)
				}
				w := bufio.NewWriterSize(f, 1<<20)
				n, err = DumpPages(pid, w)
				thaw()
				if err == nil {
					err = w.Flush()
				}
				_ = f.Close()
				_ = os.Remove(f.Name())
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/(1<<20), "MiB/dump")
			b.ReportMetric(float64(n)*float64(b.N)/(1<<20)/time.Since(start).Seconds(), "MiB/s")
		})
	}
}
