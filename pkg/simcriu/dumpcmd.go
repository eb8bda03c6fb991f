package simcriu

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
)

// DumpCommand is the command the sandbox's simulated runtime runs for a
// checkpoint, as a runtime runs runc, which runs CRIU, after it paused the
// container: "ms2m-simcriu dump --pid N --cgroup DIR --root DIR --pages
// FILE" (cmd/ms2m-simcriu; it imports little, so it starts in about 10 ms
// on the 2-core test machine). Like CRIU it takes over the stopped
// processes and thaws their cgroup, refuses connected TCP sockets unless
// the node's CRIU configuration allows them, writes the pages, and puts
// the cgroup back to frozen as it found it. It answers a DumpResult on
// stdout, or CRIU's complaint on stderr with exit status 1.
const DumpCommand = "ms2m-simcriu"

// DumpResult is what the simulated CRIU answers.
type DumpResult struct {
	Connected []string `json:"connected,omitempty"`
	PagesSize int64    `json:"pagesSize"`
}

// RunDump runs the command with its arguments (after the command's name)
// and returns the exit status.
func RunDump(args []string) int {
	fs := flag.NewFlagSet(DumpCommand+" dump", flag.ContinueOnError)
	pid := fs.Int("pid", 0, "the process (group leader) to dump, stopped")
	cgroup := fs.String("cgroup", "", "its SIMULATED cgroup directory")
	root := fs.String("root", "", "the node's root (etc/criu/*.conf)")
	pages := fs.String("pages", "", "the file to write the pages to")
	if len(args) == 0 || args[0] != "dump" || fs.Parse(args[1:]) != nil || *pid <= 0 || *pages == "" {
		fmt.Fprintln(os.Stderr, "usage: "+DumpCommand+" dump --pid N [--cgroup DIR] --root DIR --pages FILE")
		return 2
	}
	res, err := dumpStopped(*pid, Cgroup(*cgroup), *root, *pages)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func dumpStopped(pid int, cg Cgroup, root, pages string) (res DumpResult, err error) {
	opts, err := ReadCRIUOptions(root)
	if err != nil {
		return res, err
	}
	if cg != "" {
		// The processes are CRIU's now (here: they stay stopped), the
		// freezer need not hold them; it is put back when CRIU lets go.
		if err := cg.Freeze(false); err != nil {
			return res, err
		}
		defer func() {
			if ferr := cg.Freeze(true); err == nil {
				err = ferr
			}
		}()
	}
	socks, err := TCPSockets(pid)
	if err != nil {
		return res, err
	}
	connected, err := opts.CheckDump(socks)
	if err != nil {
		return res, err
	}
	for _, s := range connected {
		res.Connected = append(res.Connected, s.String())
	}
	f, err := os.OpenFile(pages, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return res, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	n, err := DumpPages(pid, w)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	res.PagesSize = n
	return res, err
}
