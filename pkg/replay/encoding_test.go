package replay

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// nasty are the pieces random keys, header names and values are made of:
// what net/http refuses (control bytes), what servers trim (spaces), what a
// list or pair syntax would split on, invalid and valid non-ASCII UTF-8, and
// plain characters, so that both forms of a key are drawn.
var nasty = []string{"\x00", "\n", "\r", "\r\n", "\t", "\x7f", " ", ":", ",", "=", "\xff", "\x80", "\xc3\x28", "é", "日本",
	"a", "Z", "0", "-", "k"}

// randomBytes is up to parts pieces of nasty; never nil.
func randomBytes(r *rand.Rand, parts int) []byte {
	b := []byte{}
	for range r.IntN(parts + 1) {
		b = append(b, nasty[r.IntN(len(nasty))]...)
	}
	return b
}

// randomRecord is a record with a random key (nil one time in eight; empty
// only if allowEmpty) and zero to four random headers, whose names repeat.
func randomRecord(r *rand.Rand, allowEmpty bool) kafka.Message {
	var m kafka.Message
	if r.IntN(8) > 0 {
		for m.Key = randomBytes(r, 6); len(m.Key) == 0 && !allowEmpty; {
			m.Key = randomBytes(r, 6)
		}
	}
	for range r.IntN(5) {
		name := string(randomBytes(r, 3))
		if len(m.Headers) > 0 && r.IntN(4) == 0 {
			name = m.Headers[r.IntN(len(m.Headers))].Key // a duplicate name
		}
		m.Headers = append(m.Headers, kafka.Header{Key: name, Value: randomBytes(r, 6)})
	}
	return m
}

// sameHeaders compares record headers exactly, but for an empty value and
// a null one, which Kafka clients (kafka-go included) do not tell apart.
func sameHeaders(got, want []kafka.Header) bool {
	return slices.EqualFunc(got, want, func(g, w kafka.Header) bool { return g.Key == w.Key && bytes.Equal(g.Value, w.Value) })
}

func newSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	return seed
}

// headerEcho serves the request headers it receives back on a channel.
func headerEcho(t *testing.T) (url string, got <-chan http.Header) {
	ch := make(chan http.Header, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { ch <- r.Header }))
	t.Cleanup(srv.Close)
	return srv.URL, ch
}

// overHTTP sends a record's key and headers through a real HTTP request and
// returns the headers the server received.
func overHTTP(t *testing.T, url string, got <-chan http.Header, m kafka.Message) http.Header {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	SetKey(req.Header, m.Key)
	SetHeaders(req.Header, m.Headers)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("sending key %q, headers %q: %v", m.Key, m.Headers, err)
	}
	_ = resp.Body.Close()
	return <-got
}

// TestKeyAndHeadersSurviveHTTP sends keys and record headers of all kinds
// through net/http and decodes them on the server: every byte, every name
// with its case, order and duplicates come back.
func TestKeyAndHeadersSurviveHTTP(t *testing.T) {
	url, got := headerEcho(t)
	check := func(t *testing.T, m kafka.Message, h http.Header) {
		t.Helper()
		key, ok, err := KeyFrom(h)
		if err != nil || ok != (m.Key != nil) || !bytes.Equal(key, m.Key) {
			t.Errorf("key %q came back as %q, %v, %v", m.Key, key, ok, err)
		}
		if m.Key != nil && (h.Get(HeaderKey) == string(m.Key)) != plain(string(m.Key)) {
			t.Errorf("key %q: %s %q, %s %q", m.Key, HeaderKey, h.Get(HeaderKey), HeaderKeyBase64, h.Get(HeaderKeyBase64))
		}
		hs, err := HeadersFrom(h)
		if err != nil || !sameHeaders(hs, m.Headers) {
			t.Errorf("headers %q came back as %q, %v", m.Headers, hs, err)
		}
	}

	cases := []kafka.Message{
		{},
		{Key: []byte{}},
		{Key: []byte("customer-42")},
		{Key: []byte("a b:c,d=")},
		{Key: []byte(" leading")},
		{Key: []byte("trailing ")},
		{Key: []byte("\x00")},
		{Key: []byte("line\nbreak")},
		{Key: []byte("\r\n")},
		{Key: []byte("tab\t")},
		{Key: []byte{0xff, 0xfe, 0}},
		{Key: []byte("\xc3\x28")},
		{Key: []byte("héllo")},
		{Key: []byte{0, 0, 0, 42}}, // an integer key
		{Headers: []kafka.Header{
			{Key: "seq", Value: []byte("41")},
			{Key: "with space", Value: []byte("v")},
			{Key: "Seq", Value: []byte("x")},
			{Key: "a:b", Value: []byte("a,b:c")},
			{Key: "ünïcode", Value: []byte("é")},
			{Key: "", Value: nil},
			{Key: "\xff\x00", Value: []byte("\x00\r\n")},
			{Key: "trace", Value: nil},
			{Key: "seq", Value: []byte("again")},
			{Key: "trace", Value: []byte(" padded ")},
			{Key: "x,y", Value: []byte{0x80}},
		}},
	}
	for _, m := range cases {
		check(t, m, overHTTP(t, url, got, m))
	}

	// The convenience form: token names with plain values, under their
	// case-insensitive HTTP name, in their order; the others absent.
	h := overHTTP(t, url, got, cases[len(cases)-1])
	var names []string
	for name := range h {
		if strings.HasPrefix(name, HeaderPrefix) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	if want := []string{HeaderPrefix + "Seq", HeaderPrefix + "Trace"}; !slices.Equal(names, want) {
		t.Errorf("convenience headers %q, want %q", names, want)
	}
	if v := h.Values(HeaderPrefix + "seq"); !slices.Equal(v, []string{"41", "x", "again"}) {
		t.Errorf("%sSeq = %q", HeaderPrefix, v)
	}

	seed := newSeed(t)
	r := rand.New(rand.NewPCG(seed, 1))
	forms := map[string]int{}
	for range 300 {
		m := randomRecord(r, true)
		h := overHTTP(t, url, got, m)
		check(t, m, h)
		for _, f := range []string{HeaderKey, HeaderKeyBase64} {
			if len(h.Values(f)) > 0 {
				forms[f]++
			}
		}
	}
	if forms[HeaderKey] == 0 || forms[HeaderKeyBase64] == 0 {
		t.Errorf("random keys drew only some forms: %v", forms)
	}
}

func TestMalformedKeyAndHeadersAreErrors(t *testing.T) {
	for _, h := range []http.Header{
		{HeaderKey: {"k"}, HeaderKeyBase64: {"aw=="}},
		{HeaderKey: {"k", "l"}},
		{HeaderKeyBase64: {"not base64!"}},
	} {
		if key, ok, err := KeyFrom(h); err == nil {
			t.Errorf("KeyFrom(%v) = %q, %v, no error", h, key, ok)
		}
	}
	for _, v := range []string{"c2Vx", "c2Vx:!!", "!!:NDE=", "c2Vx:NDE=,bad"} {
		if hs, err := HeadersFrom(http.Header{HeaderRecordHeaders: {v}}); err == nil {
			t.Errorf("HeadersFrom(%q) = %q, no error", v, hs)
		}
	}
	// Several lines, spaces after commas and empty elements are one list.
	hs, err := HeadersFrom(http.Header{HeaderRecordHeaders: {"c2Vx:NDE=, ,", " :"}})
	if err != nil || !sameHeaders(hs, []kafka.Header{{Key: "seq", Value: []byte("41")}, {}}) {
		t.Errorf("a list over two lines: %q, %v", hs, err)
	}
}

// TestBatchCarriesKeysAndHeadersExactly: in a batch, keys and values are
// JSON base64, header names JSON strings, or base64 when not valid UTF-8.
func TestBatchCarriesKeysAndHeadersExactly(t *testing.T) {
	seed := newSeed(t)
	r := rand.New(rand.NewPCG(seed, 2))
	msgs := make([]kafka.Message, 300)
	for i := range msgs {
		msgs[i] = randomRecord(r, true)
		msgs[i].Value = randomBytes(r, 6)
	}
	msgs = append(msgs, kafka.Message{Key: []byte{0xff}, Headers: []kafka.Header{{Key: "\xff\xfe", Value: []byte("v")}}})
	body, err := encodeBatch(msgs, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var b Batch
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		bm := b.Messages[i]
		hs := make([]kafka.Header, len(bm.Headers))
		for j, h := range bm.Headers {
			hs[j] = kafka.Header{Key: h.Name(), Value: h.Value}
		}
		// A JSON batch omits an empty key, as kafka-go reads it: no key.
		if (bm.Key == nil) != (len(m.Key) == 0) || !bytes.Equal(bm.Key, m.Key) || !bytes.Equal(bm.Value, m.Value) || !sameHeaders(hs, m.Headers) {
			t.Errorf("message %d: key %q, value %q, headers %q came back as %q, %q, %q", i, m.Key, m.Value, m.Headers, bm.Key, bm.Value, hs)
		}
	}
	if last := b.Messages[len(msgs)-1].Headers[0]; last.Key != "" || string(last.KeyBase64) != "\xff\xfe" {
		t.Errorf("a name that is not UTF-8 travelled as %+v", last)
	}
}
