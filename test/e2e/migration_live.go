package e2e

import (
	"context"
	"testing"

	"sigs.k8s.io/e2e-framework/pkg/features"
)

// LiveZeroLossSpec: the example consumer, opted in to ms2m, gets its replay
// sidecar from the webhook and processes every message the producer writes
// exactly once, ending with the state the input implies.
func LiveZeroLossSpec(in SpecInput) features.Feature {
	return feature("the example workload processes a producer's stream with zero loss", "sidecar injected, every message processed live exactly once, state exact", func(ctx context.Context, t *testing.T) {
		s := in.open(t, "live")
		s.deployConsumer(ctx)
		s.startProducer(ctx)
		s.verifyZeroLoss(ctx)
	})
}
