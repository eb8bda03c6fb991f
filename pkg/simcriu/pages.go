package simcriu

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// What the simulated dump costs, and why it is real work: CRIU freezes the
// process tree, finds the pages each process has in memory (its pagemap)
// and copies them into pages-*.img, so dump time and image size grow with
// the process's resident memory (linearly, as measured by Tošić,
// "Run-time application migration using checkpoint/restore in userspace",
// arXiv:2307.12113, 2023). The simulation does the same work on the same
// pages: it stops the process group (SIGSTOP; CRIU uses the cgroup
// freezer), reads /proc/<pid>/maps and /proc/<pid>/pagemap to find the
// resident pages of every private anonymous mapping (heap, stacks, Go's
// arenas: what a checkpoint must carry; file-backed pages come from the
// image), copies them from /proc/<pid>/mem into the archive, and resumes
// the process (CRI-O checkpoints with --leave-running). So the checkpoint
// pause and the image's size follow the app's memory at this machine's
// memory-copy speed, and the restore reads them back. What it does not do:
// the parasite code, registers, file descriptors, and the page contents
// are not used on restore (the app's state comes through the hook).

const pageSize = 4096

// Frozen stops the process group of pid until the returned thaw is
// called, as CRIU's freezer does. It waits until the leader is stopped.
func Frozen(pid int) (thaw func(), err error) {
	if err := syscall.Kill(-pid, syscall.SIGSTOP); err != nil {
		return nil, fmt.Errorf("freezing process group %d: %w", pid, err)
	}
	thaw = func() { _ = syscall.Kill(-pid, syscall.SIGCONT) }
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			thaw()
			return nil, err
		}
		// "pid (comm) S ...": the state follows the last ')'.
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && (b[i+2] == 'T' || b[i+2] == 't') {
			return thaw, nil
		}
		if time.Now().After(deadline) {
			thaw()
			return nil, fmt.Errorf("process %d did not stop within 5s", pid)
		}
		time.Sleep(time.Millisecond) // the kernel gives no event for "stopped"
	}
}

// DumpPages copies the resident pages of pid's private anonymous mappings
// to w, and returns how many bytes it wrote. The process should be frozen.
func DumpPages(pid int, w io.Writer) (int64, error) {
	regions, err := anonymousRegions(pid)
	if err != nil {
		return 0, err
	}
	pagemap, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return 0, err
	}
	defer func() { _ = pagemap.Close() }()
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return 0, err
	}
	defer func() { _ = mem.Close() }()
	var written int64
	buf := make([]byte, 64*pageSize)
	entries := make([]byte, 512*8)
	for _, r := range regions {
		for start := r.start; start < r.end; {
			n := min((r.end-start)/pageSize, uint64(len(entries)/8))
			e := entries[:n*8]
			if _, err := pagemap.ReadAt(e, int64(start/pageSize*8)); err != nil {
				return written, fmt.Errorf("pagemap of %d at %#x: %w", pid, start, err)
			}
			for i := uint64(0); i < n; {
				if !resident(e[i*8:]) {
					i++
					continue
				}
				j := i + 1 // a run of resident pages, copied at once
				for j < n && j-i < uint64(len(buf)/pageSize) && resident(e[j*8:]) {
					j++
				}
				chunk := buf[:(j-i)*pageSize]
				if _, err := mem.ReadAt(chunk, int64(start+i*pageSize)); err != nil {
					return written, fmt.Errorf("memory of %d at %#x: %w", pid, start+i*pageSize, err)
				}
				m, err := w.Write(chunk)
				written += int64(m)
				if err != nil {
					return written, err
				}
				i = j
			}
			start += n * pageSize
		}
	}
	return written, nil
}

// resident reads a pagemap entry: bit 63 present, bit 62 swapped.
func resident(e []byte) bool {
	v := binary.LittleEndian.Uint64(e)
	return v&(1<<63) != 0 || v&(1<<62) != 0
}

type region struct{ start, end uint64 }

// anonymousRegions lists pid's readable private mappings without a file
// (heap, stacks, anonymous mmaps), the kernel's own ([vdso], [vvar],
// [vsyscall]) excluded.
func anonymousRegions(pid int) ([]region, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	var out []region
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		perms, inode := fields[1], fields[4]
		path := ""
		if len(fields) > 5 {
			path = fields[5]
		}
		if len(perms) < 4 || perms[0] != 'r' || perms[3] != 'p' || inode != "0" ||
			path == "[vdso]" || path == "[vvar]" || path == "[vsyscall]" || path == "[vvar_vclock]" {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		s, err1 := strconv.ParseUint(lo, 16, 64)
		e, err2 := strconv.ParseUint(hi, 16, 64)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("/proc/%d/maps: %w", pid, err)
		}
		out = append(out, region{s, e})
	}
	return out, sc.Err()
}
