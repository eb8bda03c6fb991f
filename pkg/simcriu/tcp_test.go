package simcriu

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// connectedTo reports the connected sockets of this process whose remote
// end is addr.
func connectedTo(t *testing.T, addr string) []Socket {
	t.Helper()
	socks, err := TCPSockets(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	var out []Socket
	for _, s := range socks {
		if s.Remote == addr && s.connected() {
			out = append(out, s)
		}
	}
	return out
}

// A process holding an established connection is refused as CRIU refuses
// it, unless the node's CRIU configuration has tcp-close or
// tcp-established; once the connection is closed the dump goes through.
func TestDumpRefusesAConnectedTCPSocket(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	defer func() { _ = server.Close() }()

	got := connectedTo(t, l.Addr().String())
	if len(got) != 1 || got[0].State != "ESTABLISHED" || got[0].Local != conn.LocalAddr().String() {
		t.Fatalf("the client socket to %s is not seen as ESTABLISHED: %v", l.Addr(), got)
	}
	socks, err := TCPSockets(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	_, err = CRIUOptions{}.CheckDump(socks)
	if err == nil || !strings.Contains(err.Error(), "Connected TCP socket, consider using --tcp-established option") {
		t.Fatalf("dump with a connected socket and no CRIU option: %v, want CRIU's refusal", err)
	}
	connected, err := CRIUOptions{TCPClose: true}.CheckDump(socks)
	if err != nil || len(connected) < 2 { // both ends live in this process
		t.Fatalf("tcp-close: %v, %v; want the dump to go through with both connected ends recorded", connected, err)
	}
	if err := (CRIUOptions{}).CheckRestore([]string{connected[0].String()}, "127.0.0.1"); err == nil {
		t.Fatal("restoring a connected socket without tcp-close or tcp-established must be refused")
	}
	if err := (CRIUOptions{TCPEstablished: true}).CheckRestore([]string{connected[0].String()}, "127.9.9.9"); err == nil {
		t.Fatal("restoring an established connection into a pod with another address must fail")
	}
	if err := (CRIUOptions{TCPClose: true}).CheckRestore([]string{connected[0].String()}, "127.9.9.9"); err != nil {
		t.Fatalf("tcp-close restores connections closed anywhere: %v", err)
	}

	_ = conn.Close()
	_ = server.Close()
	deadline := time.Now().Add(10 * time.Second)
	for len(connectedTo(t, l.Addr().String())) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the closed connection is still listed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	socks, err = TCPSockets(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range socks {
		if s.connected() {
			t.Skipf("another connection of the test process is open (%s): cannot check the clean dump", s)
		}
	}
	if _, err := (CRIUOptions{}).CheckDump(socks); err != nil {
		t.Fatalf("a process with only a listening socket must dump: %v", err)
	}
}

func TestReadCRIUOptionsParsesAsCRIU(t *testing.T) {
	root := t.TempDir()
	if o, err := ReadCRIUOptions(root); err != nil || o.TCPClose || o.TCPEstablished || len(o.Files) != 0 {
		t.Fatalf("no configuration: %+v, %v", o, err)
	}
	if err := os.MkdirAll(filepath.Join(root, "etc/criu"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(root, "etc/criu", name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("default.conf", "# tcp-established\n  log-file /tmp/x.log\n")
	write("runc.conf", "tcp-close # restore connections closed\n")
	o, err := ReadCRIUOptions(root)
	if err != nil {
		t.Fatal(err)
	}
	if !o.TCPClose || o.TCPEstablished || len(o.Files) != 2 {
		t.Fatalf("got %+v, want tcp-close only (a commented-out option does not count), from both files", o)
	}
}

func TestParseTCPTable(t *testing.T) {
	table := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n" +
		"   0: 0100007F:1F90 00000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0\n" +
		"   1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0 20 4 30 10 -1\n"
	socks, err := parseTCPTable([]byte(table))
	if err != nil {
		t.Fatal(err)
	}
	if len(socks) != 2 || socks[0].Local != "127.0.0.1:8080" || socks[0].State != "LISTEN" || socks[0].Queued != 2 ||
		socks[1].Remote != "127.0.0.1:8080" || socks[1].State != "ESTABLISHED" || socks[1].inode != "222" {
		t.Fatalf("parsed %+v", socks)
	}
	if _, err := (CRIUOptions{}).CheckDump(socks[:1]); err == nil || !strings.Contains(err.Error(), "In-flight connection") {
		t.Fatalf("a listening socket with queued connections: %v, want CRIU's in-flight refusal", err)
	}
	if _, err := (CRIUOptions{TCPSkipInFlight: true}).CheckDump(socks[:1]); err != nil {
		t.Fatalf("tcp-skip-in-flight: %v", err)
	}
}
