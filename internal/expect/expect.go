// Package expect holds the assertions shared by ms2m's tests. Tests never
// sleep to synchronise: they poll a condition with a deadline.
package expect

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Timeout bounds every Eventually.
const Timeout = 30 * time.Second

// Eventually polls cond every 10 ms until it returns nil, and fails the test
// with cond's last error (and what) if that does not happen within Timeout.
func Eventually(tb testing.TB, what string, cond func() error) {
	tb.Helper()
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, Timeout, true,
		func(context.Context) (bool, error) {
			last = cond()
			return last == nil, nil
		})
	if err != nil {
		tb.Fatalf("%s: still failing after %s: %v", what, Timeout, last)
	}
}
