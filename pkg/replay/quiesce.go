package replay

import (
	"context"
	"fmt"
	"net/http"
)

// QuiescePath is the path the example app serves for the app's opt-in
// (ms2m.io/app-quiesce-path) to be told that its container is checkpointed
// next. CRIU refuses to dump a process that holds a connected TCP socket
// (CRI-O and containerd do not pass --tcp-established), so once deliveries
// are paused the sidecar closes every connection it keeps to the app and,
// when the app opted in, POSTs to its path (no body, "Connection: close"):
// the app closes the connections it holds itself (to brokers, databases,
// other services; it reopens them when it next needs them) and answers
// 2xx. Opt-in, because an app that serves every path with one handler
// would take the POST for a message.
const QuiescePath = "/ms2m/quiesce"

// Quiesce closes the sidecar's connections to the app and, when the app
// opted in, asks it to close its own. An app that did not confirm is
// reported, not a failure: the checkpoint itself finds a connection left
// open, and says so.
func (d *Deliverer) Quiesce(ctx context.Context) error {
	client := d.Client
	if client == nil {
		client = http.DefaultClient
	}
	// Whatever the answer, no idle connection of ours stays open: the
	// app's server closes its end when it reads ours closing.
	defer client.CloseIdleConnections()
	if d.QuiesceURL == "" {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.QuiesceURL, nil)
	if err != nil {
		return err
	}
	req.Close = true
	if err := d.do(req); err != nil {
		return fmt.Errorf("the app did not confirm it closed its connections before the checkpoint (POST %s: %w)", d.QuiesceURL, err)
	}
	return nil
}
