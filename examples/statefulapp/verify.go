package statefulapp

import (
	"fmt"
	"slices"
	"strings"
)

// Verdict is the zero-loss check of a run: every input message processed
// live exactly once, and the app's state equal to the fold of the input.
type Verdict struct {
	Input      int     `json:"input"`
	Effects    int     `json:"effects"`
	Missing    []int64 `json:"missing,omitempty"`
	Duplicated []int64 `json:"duplicated,omitempty"`
	Unexpected []int64 `json:"unexpected,omitempty"`
	// StateChecked is false when no consumer state was given.
	StateChecked bool   `json:"stateChecked"`
	StateDigest  string `json:"stateDigest,omitempty"`
	WantDigest   string `json:"wantDigest,omitempty"`
}

// OK reports whether nothing was lost, duplicated or corrupted.
func (v Verdict) OK() bool {
	return len(v.Missing) == 0 && len(v.Duplicated) == 0 && len(v.Unexpected) == 0 &&
		(!v.StateChecked || v.StateDigest == v.WantDigest)
}

func (v Verdict) String() string {
	var b strings.Builder
	verdict := "ZERO LOSS: every message processed live exactly once"
	if !v.OK() {
		verdict = "FAILED"
	}
	fmt.Fprintf(&b, "%s\n  input %d, live effects %d, missing %d, duplicated %d, unexpected %d",
		verdict, v.Input, v.Effects, len(v.Missing), len(v.Duplicated), len(v.Unexpected))
	if v.StateChecked {
		fmt.Fprintf(&b, "\n  state digest %s (want %s)", short(v.StateDigest), short(v.WantDigest))
	}
	if len(v.Missing) > 0 {
		fmt.Fprintf(&b, "\n  first missing seqs: %v", head(v.Missing))
	}
	if len(v.Duplicated) > 0 {
		fmt.Fprintf(&b, "\n  first duplicated seqs: %v", head(v.Duplicated))
	}
	return b.String()
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

func head(s []int64) []int64 { return s[:min(len(s), 10)] }

// Verify compares the input topic with the effects topic and, when state is
// given, the app's state with the fold of the input up to its positions.
func Verify(input, effects []Record, state *Summary) Verdict {
	v := Verdict{Input: len(input), Effects: len(effects)}
	want := make(map[int64]bool, len(input))
	for _, r := range input {
		want[r.Seq] = true
	}
	seen := make(map[int64]int, len(effects))
	for _, r := range effects {
		seen[r.Seq]++
	}
	for seq, n := range seen {
		switch {
		case !want[seq]:
			v.Unexpected = append(v.Unexpected, seq)
		case n > 1:
			v.Duplicated = append(v.Duplicated, seq)
		}
	}
	for seq := range want {
		if seen[seq] == 0 {
			v.Missing = append(v.Missing, seq)
		}
	}
	slices.Sort(v.Missing)
	slices.Sort(v.Duplicated)
	slices.Sort(v.Unexpected)
	if state != nil {
		v.StateChecked = true
		v.StateDigest = state.Digest
		v.WantDigest = Expected(input, state.Positions).Digest
	}
	return v
}
