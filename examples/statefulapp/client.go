package statefulapp

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// FetchSummary reads the state summary a consumer serves at base + "/state".
func FetchSummary(ctx context.Context, base string) (Summary, error) {
	var s Summary
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/state", nil)
	if err != nil {
		return s, err
	}
	// No connection is kept: the consumer may be checkpointed next, and
	// CRIU refuses a process holding one.
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return s, fmt.Errorf("consumer state: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	return s, json.NewDecoder(resp.Body).Decode(&s)
}
