package statefulapp

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Verdict is the zero-loss check of a run: every input message processed
// live exactly once, and the app's state equal to the fold of the input.
// With several consumer replicas sharing the topic (one consumer group,
// each replica holding the state of the partitions it is given), the
// effects are counted across all of them and each replica's state is
// checked against the fold of the input of the partitions it has applied.
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
	// Replicas is each replica's state check when there are several;
	// StateDigest and WantDigest then combine theirs, in order.
	Replicas []ReplicaState `json:"replicas,omitempty"`
	// Behind lists the partitions whose last input message no state given
	// has applied: what was processed is not all in the state served.
	Behind []int `json:"behind,omitempty"`
}

// ReplicaState is one replica's state check: its digest, the digest of the
// fold of the input up to its positions, and the partitions it has applied.
type ReplicaState struct {
	Digest     string `json:"digest"`
	Want       string `json:"want"`
	Partitions []int  `json:"partitions"`
}

// OK reports whether nothing was lost, duplicated or corrupted.
func (v Verdict) OK() bool {
	return len(v.Missing) == 0 && len(v.Duplicated) == 0 && len(v.Unexpected) == 0 &&
		(!v.StateChecked || v.StateDigest == v.WantDigest && len(v.Behind) == 0)
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
		if len(v.Replicas) > 0 {
			fmt.Fprintf(&b, " over %d replicas, each the fold of its partitions %s", len(v.Replicas), replicaPartitions(v.Replicas))
		}
	}
	for i, r := range v.Replicas {
		if r.Digest != r.Want {
			fmt.Fprintf(&b, "\n  replica %d (partitions %v): state digest %s, want %s", i, r.Partitions, short(r.Digest), short(r.Want))
		}
	}
	if len(v.Behind) > 0 {
		fmt.Fprintf(&b, "\n  partitions whose last message no state has applied: %v", v.Behind)
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

func replicaPartitions(rs []ReplicaState) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprint(r.Partitions)
	}
	return strings.Join(parts, " ")
}

func head(s []int64) []int64 { return s[:min(len(s), 10)] }

// Verify compares the input topic with the effects topic and, when state is
// given, the app's state with the fold of the input up to its positions.
func Verify(input, effects []Record, state *Summary) Verdict {
	if state == nil {
		return VerifyReplicas(input, effects)
	}
	return VerifyReplicas(input, effects, *state)
}

// VerifyReplicas is Verify for a consumer of several replicas in one
// group, given each replica's state: the effects of all of them together
// must cover the input exactly once, each replica's state must be the fold
// of the input of its partitions up to its positions (a replica holds only
// the keys of the partitions it was given, which the producer's keyed
// partitioning keeps apart), and every partition's last message must be in
// some replica's state. With one state it is Verify's check.
func VerifyReplicas(input, effects []Record, states ...Summary) Verdict {
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
	if len(states) == 0 {
		return v
	}
	v.StateChecked = true
	reached := map[int]int64{}
	for _, st := range states {
		v.Replicas = append(v.Replicas, ReplicaState{Digest: st.Digest, Want: Expected(input, st.Positions).Digest,
			Partitions: slices.Sorted(maps.Keys(st.Positions))})
		for p, next := range st.Positions {
			reached[p] = max(reached[p], next)
		}
	}
	end := map[int]int64{}
	for _, r := range input {
		end[r.Partition] = max(end[r.Partition], r.Offset+1)
	}
	for p, e := range end {
		if reached[p] < e {
			v.Behind = append(v.Behind, p)
		}
	}
	slices.Sort(v.Behind)
	if len(states) == 1 {
		v.StateDigest, v.WantDigest, v.Replicas = v.Replicas[0].Digest, v.Replicas[0].Want, nil
		return v
	}
	gotSum, wantSum := sha256.New(), sha256.New()
	for _, r := range v.Replicas {
		_, _ = fmt.Fprintln(gotSum, r.Digest)
		_, _ = fmt.Fprintln(wantSum, r.Want)
	}
	v.StateDigest, v.WantDigest = hex.EncodeToString(gotSum.Sum(nil)), hex.EncodeToString(wantSum.Sum(nil))
	return v
}
