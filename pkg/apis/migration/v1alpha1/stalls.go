package v1alpha1

import (
	"strings"
	"time"
)

// Split says what a migration's downtime is made of, e.g. "checkpoint
// pause 21.3ms + handover 4.8ms", and when the controller measured part
// of it; "" for none.
func (s *Stalls) Split() string {
	if s == nil {
		return ""
	}
	var parts []string
	if s.CheckpointPause != nil {
		parts = append(parts, "checkpoint pause "+s.CheckpointPause.Duration.Round(100*time.Microsecond).String())
	}
	if s.Handover != nil {
		parts = append(parts, "handover "+s.Handover.Duration.Round(100*time.Microsecond).String())
	}
	out := strings.Join(parts, " + ")
	if out != "" && s.Measured == StallsByController {
		out += ", partly measured by the controller"
	}
	return out
}
