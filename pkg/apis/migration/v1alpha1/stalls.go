package v1alpha1

import (
	"fmt"
	"strings"
	"time"
)

// FormatDuration renders d for people, the same way wherever ms2m prints a
// duration: milliseconds to the tenth below a second, seconds to the
// millisecond below a minute, then tenths of a second.
func FormatDuration(d time.Duration) string {
	switch {
	case d < 0:
		d = 0
		fallthrough
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
	case d < time.Minute:
		return fmt.Sprintf("%.3fs", d.Seconds())
	default:
		return d.Round(100 * time.Millisecond).String()
	}
}

// Split says what a migration's downtime is made of, e.g. "checkpoint
// pause 21.3ms + handover 4.8ms", and when the controller measured part
// of it; "" for none.
func (s *Stalls) Split() string {
	if s == nil {
		return ""
	}
	var parts []string
	if s.CheckpointPause != nil {
		parts = append(parts, "checkpoint pause "+FormatDuration(s.CheckpointPause.Duration))
	}
	if s.Handover != nil {
		parts = append(parts, "handover "+FormatDuration(s.Handover.Duration))
	}
	out := strings.Join(parts, " + ")
	if out != "" && s.Measured == StallsByController {
		out += ", partly measured by the controller"
	}
	return out
}
