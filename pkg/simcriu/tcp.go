package simcriu

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ms2m/ms2m/pkg/procnet"
)

// What CRIU does with a process's TCP sockets (criu/sk-inet.c,
// can_dump_inet_sk and the restore side of open_inet_sk), which the
// simulated dump and restore enforce:
//
//   - A listening socket is dumped, unless connections wait in its accept
//     queue ("In-flight connection (l)"; --tcp-skip-in-flight ignores them).
//   - A connected socket (ESTABLISHED, SYN_SENT, FIN_WAIT1/2, CLOSE_WAIT,
//     LAST_ACK, CLOSING) refuses the dump ("Connected TCP socket, consider
//     using --tcp-established option.") unless --tcp-established or
//     --tcp-close is given. Neither CRI-O nor containerd passes them; a
//     node's CRIU configuration file can (see CRIUOptions).
//   - Restoring an image that holds a connected socket needs one of them on
//     the restoring node too ("Connected TCP socket in image").
//     --tcp-close restores it closed (the app sees the connection drop);
//     --tcp-established restores it with its original addresses through TCP
//     repair, which cannot work in a new pod: its address is gone.
//   - A closed (unconnected) socket is recreated.

// Socket is one TCP socket a process holds open.
type Socket struct {
	Local, Remote string
	State         string
	// Queued is, for a listening socket, the connections waiting to be
	// accepted.
	Queued int
	inode  string
	state  int
}

func (s Socket) String() string {
	if s.state == procnet.Listen {
		return fmt.Sprintf("%s LISTEN (%d waiting to be accepted)", s.Local, s.Queued)
	}
	return fmt.Sprintf("%s -> %s %s", s.Local, s.Remote, s.State)
}

// connected says whether CRIU treats s as a connection.
func (s Socket) connected() bool {
	switch s.state {
	case procnet.Established, procnet.SynSent, procnet.FinWait1, procnet.FinWait2, procnet.CloseWait, procnet.LastAck, procnet.Closing:
		return true
	}
	return false
}

// TCPSockets lists the TCP sockets the process tree rooted at pid holds,
// from /proc: the socket inodes of each process's descriptors, looked up in
// the tables of the process's network namespace (/proc/<pid>/net/tcp,
// tcp6).
func TCPSockets(pid int) ([]Socket, error) {
	inodes := map[string]bool{}
	for _, p := range processTree(pid) {
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p))
		if err != nil {
			if p == pid {
				return nil, fmt.Errorf("listing the descriptors of process %d: %w", p, err)
			}
			continue // a child that exited meanwhile
		}
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", p), fd.Name()))
			if err != nil {
				continue // closed meanwhile
			}
			if ino, ok := strings.CutPrefix(target, "socket:["); ok {
				inodes[strings.TrimSuffix(ino, "]")] = true
			}
		}
	}
	socks, err := procnet.Read(fmt.Sprintf("/proc/%d/net", pid))
	if err != nil {
		return nil, fmt.Errorf("reading the TCP table of process %d: %w", pid, err)
	}
	var out []Socket
	for _, s := range fromProcnet(socks) {
		if inodes[s.inode] {
			out = append(out, s)
		}
	}
	return out, nil
}

// processTree is pid and its descendants (/proc/<pid>/task/<tid>/children).
func processTree(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", out[i]))
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			for f := range strings.FieldsSeq(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// parseTCPTable reads the kernel's /proc/net/tcp format.
func parseTCPTable(data []byte) ([]Socket, error) {
	socks, err := procnet.Parse(data)
	return fromProcnet(socks), err
}

func fromProcnet(socks []procnet.Socket) []Socket {
	out := make([]Socket, 0, len(socks))
	for _, s := range socks {
		out = append(out, Socket{Local: s.Local, Remote: s.Remote, State: procnet.StateName(s.State), Queued: s.Queued, inode: s.Inode, state: s.State})
	}
	return out
}

// CRIUOptions are the options of a node's CRIU configuration that decide
// what happens to TCP sockets.
type CRIUOptions struct {
	TCPEstablished, TCPClose, TCPSkipInFlight bool
	// Files are the configuration files that were read.
	Files []string
}

// CRIUConfigFiles are the files CRIU reads when a runtime calls it through
// runc, in order, under a node's root: CRIU's global default.conf, then the
// file runc names (runc.conf). crun names crun.conf and falls back to
// runc.conf; the sandbox's runtime behaves as runc.
var CRIUConfigFiles = []string{"etc/criu/default.conf", "etc/criu/runc.conf"}

// ReadCRIUOptions reads the CRIU configuration under root as CRIU parses it
// (criu/config.c): one option per line, its name without the leading
// dashes, "#" starting a comment.
func ReadCRIUOptions(root string) (CRIUOptions, error) {
	var o CRIUOptions
	for _, f := range CRIUConfigFiles {
		data, err := os.ReadFile(filepath.Join(root, f))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return o, err
		}
		o.Files = append(o.Files, "/"+f)
		for line := range strings.Lines(string(data)) {
			line = strings.TrimSpace(line)
			if line == "" || line[0] == '#' {
				continue
			}
			opt, _, _ := strings.Cut(line, " ")
			switch opt {
			case "tcp-established":
				o.TCPEstablished = true
			case "tcp-close":
				o.TCPClose = true
			case "tcp-skip-in-flight":
				o.TCPSkipInFlight = true
			}
		}
	}
	return o, nil
}

// CheckDump refuses, as CRIU does, a dump of the given sockets under
// options o. It returns the connected sockets that are dumped (all closed
// on restore under --tcp-close).
func (o CRIUOptions) CheckDump(socks []Socket) (connected []Socket, err error) {
	for _, s := range socks {
		switch {
		case s.state == procnet.Listen && s.Queued > 0 && !o.TCPSkipInFlight:
			return nil, fmt.Errorf("CRIU: In-flight connection (l) for %s: in-flight connections can be ignored with the --tcp-skip-in-flight option", s)
		case s.connected() && !o.TCPEstablished && !o.TCPClose:
			return nil, fmt.Errorf("CRIU: Connected TCP socket, consider using --tcp-established option (%s)", s)
		case s.connected():
			connected = append(connected, s)
		}
	}
	return connected, nil
}

// CheckRestore refuses, as CRIU does, to restore connected sockets under
// options o into a pod whose address is podIP.
func (o CRIUOptions) CheckRestore(connected []string, podIP string) error {
	if len(connected) == 0 {
		return nil
	}
	switch {
	case o.TCPClose:
		return nil // restored closed
	case o.TCPEstablished:
		for _, c := range connected {
			local, _, _ := strings.Cut(c, " ")
			if host, _, err := net.SplitHostPort(local); err == nil && host != podIP {
				return fmt.Errorf("CRIU: Can't bind inet socket (%s): Cannot assign requested address (the connection was restored with --tcp-established, which keeps its original address %s; this pod's is %s)", c, host, podIP)
			}
		}
		return nil
	}
	return fmt.Errorf("CRIU: Connected TCP socket in image (%s): the restoring node's CRIU configuration has neither tcp-established nor tcp-close", strings.Join(connected, ", "))
}
