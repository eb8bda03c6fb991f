package statefulapp

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/ms2m/ms2m/pkg/replay"
)

func records(n int) []Record {
	var out []Record
	for i := range n {
		out = append(out, Record{Partition: i % 2, Offset: int64(i / 2), Key: "k" + strconv.Itoa(i%3), Seq: int64(i)})
	}
	return out
}

func TestDigestDetectsLossDuplicationAndReorder(t *testing.T) {
	in := records(12)
	exact := NewState()
	for _, r := range in {
		_, _ = exact.Apply(r, false, nil)
	}
	want := Expected(in, exact.Summary().Positions).Digest
	if got := exact.Summary().Digest; got != want {
		t.Fatalf("exact consumer digest %s != expected fold %s", got, want)
	}
	cases := map[string][]Record{
		"lost":      append(append([]Record{}, in[:4]...), in[5:]...),
		"reordered": append(append([]Record{in[0], in[1], in[8]}, in[2:8]...), in[9:]...),
	}
	for name, seq := range cases {
		s := NewState()
		for _, r := range seq {
			s.applyLocked(r)
		}
		if s.digestLocked() == want {
			t.Errorf("%s: digest unchanged", name)
		}
	}
}

func TestRedeliveryIsAppliedOnce(t *testing.T) {
	s := NewState()
	effects := 0
	count := func(Record) error { effects++; return nil }
	r := Record{Partition: 0, Offset: 7, Key: "a", Seq: 1}
	for range 3 {
		_, _ = s.Apply(r, false, count)
	}
	if sum := s.Summary(); sum.Live != 1 || effects != 1 {
		t.Fatalf("redelivered message applied %d times with %d effects, want once", sum.Live, effects)
	}
}

func TestReplaySuppressesEffectsAndSnapshotRestores(t *testing.T) {
	s := NewState()
	effects := 0
	count := func(Record) error { effects++; return nil }
	in := records(6)
	for _, r := range in[:3] {
		_, _ = s.Apply(r, true, count)
	}
	for _, r := range in[3:] {
		_, _ = s.Apply(r, false, count)
	}
	if effects != 3 {
		t.Fatalf("effects = %d, want 3 (replayed messages must not repeat side effects)", effects)
	}
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	r := NewState()
	if err := r.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if got, want := r.Summary(), s.Summary(); got.Digest != want.Digest || !got.Restored || got.Positions[1] != want.Positions[1] {
		t.Fatalf("restored %+v, want digest %s and positions %v", got, want.Digest, want.Positions)
	}
}

func TestVerify(t *testing.T) {
	in := records(5)
	v := Verify(in, []Record{in[0], in[1], in[1], in[3], in[4], {Seq: 99}}, nil)
	if v.OK() || len(v.Missing) != 1 || v.Missing[0] != 2 || len(v.Duplicated) != 1 || v.Duplicated[0] != 1 || len(v.Unexpected) != 1 {
		t.Fatalf("verdict %+v", v)
	}
	if !strings.Contains(v.String(), "FAILED") {
		t.Errorf("verdict text does not say FAILED: %s", v)
	}
	if v := Verify(in, in, nil); !v.OK() {
		t.Fatalf("exact run reported as %s", v)
	}
}

func TestServerRejectsMalformedMessages(t *testing.T) {
	srv := httptest.NewServer((&Server{State: NewState()}).Handler())
	defer srv.Close()
	post := func(value string, hdr map[string]string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/messages", strings.NewReader(value))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	ok := map[string]string{replay.HeaderPartition: "0", replay.HeaderOffset: "0", replay.HeaderKey: "k"}
	if c := post("x", ok); c != http.StatusBadRequest {
		t.Errorf("non-numeric value: %d", c)
	}
	if c := post("1", map[string]string{}); c != http.StatusBadRequest {
		t.Errorf("missing headers: %d", c)
	}
	if c := post("1", ok); c != http.StatusNoContent {
		t.Errorf("valid message: %d", c)
	}
}

// A binary key (an integer's bytes) reaches the state as the same bytes a
// reader of the topic sees, so that Verify compares like with like.
func TestServerKeepsBinaryKeys(t *testing.T) {
	st := NewState()
	srv := httptest.NewServer((&Server{State: st}).Handler())
	defer srv.Close()
	keys := []string{"k1", "\x00\x00\x00\x2a", " spaced\r\n", "\xff"}
	for i, key := range keys {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/messages", strings.NewReader(strconv.Itoa(i)))
		req.Header.Set(replay.HeaderPartition, "0")
		req.Header.Set(replay.HeaderOffset, strconv.Itoa(i))
		replay.SetKey(req.Header, []byte(key))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("key %q: %s", key, resp.Status)
		}
	}
	want := NewState()
	for i, key := range keys {
		want.applyLocked(Record{Partition: 0, Offset: int64(i), Key: key, Seq: int64(i)})
	}
	if got, exp := st.Summary(), want.Summary(); got.Digest != exp.Digest || got.Keys != len(keys) {
		t.Errorf("state after binary keys: %+v, want %+v", got, exp)
	}
}

// Three replicas of one group, each given two of six partitions, hold the
// state of their own partitions only: the verdict checks each against the
// fold of its partitions, and catches a replica that lost a message or a
// partition whose last message is in no replica's state.
func TestVerifyReplicas(t *testing.T) {
	var in []Record
	for i := range 36 {
		in = append(in, Record{Partition: i % 6, Offset: int64(i / 6), Key: "k" + strconv.Itoa(i%6), Seq: int64(i)})
	}
	replicas := func(skip Record) []Summary {
		var out []Summary
		for r := range 3 {
			s := NewState()
			for _, rec := range in {
				if rec.Partition/2 == r && rec != skip {
					_, _ = s.Apply(rec, false, nil)
				}
			}
			out = append(out, s.Summary())
		}
		return out
	}
	v := VerifyReplicas(in, in, replicas(Record{})...)
	if !v.OK() || len(v.Replicas) != 3 || v.StateDigest != v.WantDigest {
		t.Fatalf("exact replicas reported as %s", v)
	}
	if p := v.Replicas[1].Partitions; len(p) != 2 || p[0] != 2 || p[1] != 3 {
		t.Errorf("replica 1 holds partitions %v, want [2 3]", p)
	}
	lost := VerifyReplicas(in, in, replicas(in[15])...) // partition 3, offset 2: replica 1
	if lost.OK() || lost.Replicas[1].Digest == lost.Replicas[1].Want || !strings.Contains(lost.String(), "replica 1 (partitions [2 3])") {
		t.Fatalf("a replica that skipped a message passed: %s", lost)
	}
	behind := VerifyReplicas(in, in, replicas(in[35])...) // the last message of partition 5
	if behind.OK() || len(behind.Behind) != 1 || behind.Behind[0] != 5 {
		t.Fatalf("a state missing a partition's last message passed: %s", behind)
	}
	one := NewState()
	for _, r := range in {
		_, _ = one.Apply(r, false, nil)
	}
	if s := one.Summary(); Verify(in, in, &s).StateDigest != s.Digest {
		t.Errorf("one replica's verdict does not show its own digest")
	}
}
