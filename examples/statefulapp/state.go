// Package statefulapp is the example stateful workload ms2m migrates: a
// consumer whose per-key state lives only in memory and is built from the
// exact message sequence, so any lost, duplicated or reordered message shows
// up as a different state digest. The consumer, producer and verifier
// binaries under examples/ are thin wrappers around it; the e2e tests and
// `make demo` use it directly.
package statefulapp

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
)

// KeyState is what the app remembers per key: how many messages it applied
// and a hash chain over their sequence numbers in order.
type KeyState struct {
	Count   int64  `json:"count"`
	LastSeq int64  `json:"lastSeq"`
	Chain   string `json:"chain"`
}

// State is the app's memory. Positions make it exact: per partition, the
// next offset the state has not seen.
type State struct {
	mu        sync.Mutex
	keys      map[string]*KeyState
	positions map[int]int64
	live      int64
	replayed  int64
	restored  bool
}

// NewState is an empty state.
func NewState() *State {
	return &State{keys: map[string]*KeyState{}, positions: map[int]int64{}}
}

// Record is one message of the topic.
type Record struct {
	Partition int
	Offset    int64
	Key       string
	Seq       int64
	// Previous is the sidecar's Ms2m-Previous-Offset: the offset of this
	// partition it saw the app acknowledge last (nil: not said).
	Previous *int64
}

// BehindError is Apply's answer to a record whose partition the state has
// not followed up to the sidecar's previous offset: the app lost state (its
// container restarted from the checkpoint image) and needs the records
// from Next again, which it asks for with a 409.
type BehindError struct {
	Partition int
	Next      int64
}

func (e *BehindError) Error() string {
	return fmt.Sprintf("partition %d: my state ends before offset %d; replay from there", e.Partition, e.Next)
}

// ParseSeq reads the sequence number a producer wrote as the value.
func ParseSeq(value []byte) (int64, error) {
	seq, err := strconv.ParseInt(string(value), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("message value %q is not a sequence number", value)
	}
	return seq, nil
}

// Apply folds one record into the state unless the state has already seen
// its offset (a redelivery), and reports whether it did. A record beyond
// what the state followed is refused with a *BehindError. effect runs first,
// under the lock, for a live (not replayed) record; if it fails, nothing is
// applied and the error is returned, so the sidecar retries.
func (s *State) Apply(r Record, replay bool, effect func(Record) error) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next, ok := s.positions[r.Partition]
	if ok && r.Offset < next {
		return false, nil
	}
	if ok && r.Previous != nil && next <= *r.Previous {
		return false, &BehindError{Partition: r.Partition, Next: next}
	}
	if !replay && effect != nil {
		if err := effect(r); err != nil {
			return false, err
		}
	}
	s.applyLocked(r)
	if replay {
		s.replayed++
	} else {
		s.live++
	}
	return true, nil
}

func (s *State) applyLocked(r Record) {
	k := s.keys[r.Key]
	if k == nil {
		k = &KeyState{}
		s.keys[r.Key] = k
	}
	h := sha256.New()
	h.Write([]byte(k.Chain))
	_ = binary.Write(h, binary.BigEndian, r.Seq)
	k.Chain = hex.EncodeToString(h.Sum(nil))
	k.Count++
	k.LastSeq = r.Seq
	s.positions[r.Partition] = r.Offset + 1
}

// Summary is what GET /state returns.
type Summary struct {
	Digest    string        `json:"digest"`
	Keys      int           `json:"keys"`
	Applied   int64         `json:"applied"`
	Live      int64         `json:"live"`
	Replayed  int64         `json:"replayed"`
	Positions map[int]int64 `json:"positions"`
	Restored  bool          `json:"restored"`
}

// Summary returns the digest and counters.
func (s *State) Summary() Summary {
	s.mu.Lock()
	defer s.mu.Unlock()
	var applied int64
	for _, k := range s.keys {
		applied += k.Count
	}
	return Summary{Digest: s.digestLocked(), Keys: len(s.keys), Applied: applied, Live: s.live, Replayed: s.replayed,
		Positions: maps.Clone(s.positions), Restored: s.restored}
}

func (s *State) digestLocked() string {
	h := sha256.New()
	for _, key := range slices.Sorted(maps.Keys(s.keys)) {
		k := s.keys[key]
		_, _ = fmt.Fprintf(h, "%s=%d:%s\n", key, k.Count, k.Chain)
	}
	return hex.EncodeToString(h.Sum(nil))
}

type snapshot struct {
	Keys      map[string]*KeyState `json:"keys"`
	Positions map[int]int64        `json:"positions"`
}

// Snapshot is the memory image a checkpoint captures: consistent, since it
// holds the lock every Apply holds.
func (s *State) Snapshot() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return json.Marshal(snapshot{Keys: s.keys, Positions: s.positions})
}

// Restore replaces the state with a snapshot's. Counters of live and
// replayed messages start again at zero: they describe this process.
func (s *State) Restore(b []byte) error {
	var snap snapshot
	if err := json.Unmarshal(b, &snap); err != nil {
		return fmt.Errorf("restoring state: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys, s.positions, s.restored = snap.Keys, snap.Positions, true
	if s.keys == nil {
		s.keys = map[string]*KeyState{}
	}
	if s.positions == nil {
		s.positions = map[int]int64{}
	}
	return nil
}

// Expected folds the records (in offset order per partition) below the
// given positions: the state an exact consumer at those positions holds.
func Expected(records []Record, positions map[int]int64) Summary {
	s := NewState()
	for _, r := range records {
		if r.Offset < positions[r.Partition] {
			s.applyLocked(r)
		}
	}
	return s.Summary()
}
