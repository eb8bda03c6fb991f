// Package procnet reads the kernel's TCP socket tables (/proc/net/tcp and
// tcp6): what CRIU's dump looks at to decide whether a process's sockets
// can be checkpointed (the simulated dump, pkg/simcriu).
package procnet

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// TCP states as the kernel numbers them (include/net/tcp_states.h).
const (
	Established = 0x01
	SynSent     = 0x02
	FinWait1    = 0x04
	FinWait2    = 0x05
	TimeWait    = 0x06
	Close       = 0x07
	CloseWait   = 0x08
	LastAck     = 0x09
	Listen      = 0x0A
	Closing     = 0x0B
)

var stateNames = map[int]string{
	Established: "ESTABLISHED", SynSent: "SYN_SENT", FinWait1: "FIN_WAIT1", FinWait2: "FIN_WAIT2", TimeWait: "TIME_WAIT",
	Close: "CLOSE", CloseWait: "CLOSE_WAIT", LastAck: "LAST_ACK", Listen: "LISTEN", Closing: "CLOSING",
}

// StateName is the kernel's name of a TCP state.
func StateName(st int) string {
	if n := stateNames[st]; n != "" {
		return n
	}
	return fmt.Sprintf("state %#x", st)
}

// Socket is one line of a TCP table.
type Socket struct {
	Local, Remote string // host:port
	State         int
	// Queued is the receive queue: for a listening socket, the connections
	// waiting to be accepted.
	Queued int
	Inode  string
}

// Read reads the tcp and tcp6 tables in dir (/proc/<pid>/net, or
// /proc/self/net); a missing tcp6 (no IPv6) is not an error.
func Read(dir string) ([]Socket, error) {
	var out []Socket
	for _, table := range []string{"tcp", "tcp6"} {
		data, err := os.ReadFile(filepath.Join(dir, table))
		if errors.Is(err, os.ErrNotExist) && table == "tcp6" {
			continue
		}
		if err != nil {
			return nil, err
		}
		socks, err := Parse(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, table), err)
		}
		out = append(out, socks...)
	}
	return out, nil
}

// Parse reads the kernel's format: a header, then
// "sl local_address rem_address st tx_queue:rx_queue ... inode".
func Parse(data []byte) ([]Socket, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Scan() // header
	var out []Socket
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			continue
		}
		local, err1 := hexAddr(f[1])
		remote, err2 := hexAddr(f[2])
		st, err3 := strconv.ParseInt(f[3], 16, 32)
		_, rx, _ := strings.Cut(f[4], ":")
		queued, err4 := strconv.ParseInt(rx, 16, 64)
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			return nil, fmt.Errorf("line %q: %w", sc.Text(), err)
		}
		out = append(out, Socket{Local: local, Remote: remote, State: int(st), Queued: int(queued), Inode: f[9]})
	}
	return out, sc.Err()
}

// hexAddr decodes "0100007F:1F90" (IPv4) or a 32-digit IPv6 address: the
// kernel prints each 32-bit word in host (little-endian) byte order.
func hexAddr(s string) (string, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return "", fmt.Errorf("address %q", s)
	}
	raw, err := hex.DecodeString(h)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return "", fmt.Errorf("address %q", s)
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return "", fmt.Errorf("port %q", p)
	}
	// An IPv4-mapped address in tcp6 prints as IPv4, as the same
	// connection seen from IPv4 does.
	return net.JoinHostPort(net.IP(raw).String(), strconv.FormatUint(port, 10)), nil
}
