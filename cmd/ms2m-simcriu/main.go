// Command ms2m-simcriu is the sandbox's SIMULATED CRIU: the simulated
// nodes' runtime runs it for a checkpoint, as a runtime runs runc, which
// runs CRIU (see simcriu.DumpCommand). It is not for real nodes.
package main

import (
	"os"

	"github.com/ms2m/ms2m/pkg/simcriu"
)

func main() {
	os.Exit(simcriu.RunDump(os.Args[1:]))
}
