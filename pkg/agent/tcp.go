package agent

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/log"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// criuConfigFiles are the CRIU configuration files a runtime's CRIU reads:
// CRIU's own default.conf, then the file the OCI runtime names (runc:
// runc.conf; crun: crun.conf, falling back to runc.conf, with CRIU 4.2 or
// later).
var criuConfigFiles = []string{"/etc/criu/default.conf", "/etc/criu/runc.conf", "/etc/criu/crun.conf"}

// criuTCP is what a node's CRIU configuration does with connected TCP
// sockets: the option ("tcp-close", "tcp-established" or "") and the file
// that sets it.
type criuTCP struct {
	Option, File string
}

// criuConnectedTCP reads the CRIU configuration files: each line is one
// option, named without its dashes, "#" starting a comment (criu(8),
// "Configuration files"). tcp-close wins over tcp-established: with both,
// CRIU restores connections closed.
func (h hostFS) criuConnectedTCP() criuTCP {
	var out criuTCP
	for _, f := range criuConfigFiles {
		data, err := h.readFile(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) == 0 {
				continue
			}
			switch fields[0] {
			case "tcp-close":
				out = criuTCP{Option: "tcp-close", File: f}
			case "tcp-established":
				if out.Option != "tcp-close" {
					out = criuTCP{Option: "tcp-established", File: f}
				}
			}
		}
	}
	return out
}

// connectionRefusals are CRIU's words for a dump refused on a TCP socket
// (criu/sk-inet.c). crun puts the end of CRIU's log into its error, so
// they reach the kubelet's answer on CRI-O with crun; runc names the log
// file only.
var connectionRefusals = []string{"Connected TCP socket", "In-flight connection"}

func refusedForAConnection(err error) bool {
	if err == nil {
		return false
	}
	for _, s := range connectionRefusals {
		if strings.Contains(err.Error(), s) {
			return true
		}
	}
	return false
}

// checkpointAttempts bounds the checkpoints tried when CRIU refuses one for
// a TCP connection: a probe's or a scrape's connection lasts milliseconds,
// one the app keeps open does not go away.
const checkpointAttempts = 3

// checkpointRetrying checkpoints, trying again shortly when CRIU refused
// for a TCP connection; the last refusal says what to change.
func (r *Reconciler) checkpointRetrying(ctx context.Context, m *v1.StatefulMigration, checkpoint func() (string, error)) (string, int, error) {
	wait := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		archive, err := checkpoint()
		if !refusedForAConnection(err) {
			return archive, attempt, err
		}
		if attempt == checkpointAttempts {
			return "", attempt, fmt.Errorf("%w: the app container holds a TCP connection at the checkpoint (%d attempts), and CRIU refuses to checkpoint one unless its configuration says tcp-close; "+
				"make the app close its connections before a checkpoint (annotate the pod ms2m.io/app-quiesce-path, e.g. /ms2m/quiesce, and close them when the sidecar POSTs there; docs/app-contract.md, \"Connections\"), or allow them on the node (tcp-close in /etc/criu/runc.conf; docs/install.md, \"CRIU configuration\")",
				err, attempt)
		}
		log.FromContext(ctx).Info("CRIU refused the checkpoint for a TCP connection; trying again", "migration", m.Name, "attempt", attempt, "error", err.Error())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", attempt, err
		case <-t.C:
		}
		wait *= 2
	}
}
