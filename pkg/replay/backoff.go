package replay

import (
	"math/rand/v2"
	"time"
)

// jitter is d with equal jitter: between d/2 and d, at random. Sidecars
// that lost the broker (or an app) at the same moment then do not all
// retry at the same moments.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}
