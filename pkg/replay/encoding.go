package replay

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"

	"github.com/segmentio/kafka-go"
)

// A record's key and headers are bytes, and Kafka header names are arbitrary
// strings, but an HTTP field value cannot hold control bytes (net/http
// refuses to send them, so a record holding one would be retried forever),
// servers trim its leading and trailing whitespace and decode bytes above
// 0x7e in different ways, and a field name is a case-insensitive token. So
// (docs/app-contract.md):
//
//   - a key that is plain (printable ASCII, no leading or trailing space)
//     goes as-is in Ms2m-Key; any other key goes base64 (RFC 4648, standard
//     alphabet, padded) in Ms2m-Key-Base64, and Ms2m-Key is absent. A record
//     without key has neither.
//   - Ms2m-Headers lists all the record's headers, in order, duplicates
//     included, as comma-separated base64(name) ":" base64(value) entries.
//     It is the exact form.
//   - In addition, each header whose name is an HTTP token and whose value
//     is plain goes as Ms2m-Header-<name>: <value>, as before: a convenience
//     for apps that look one header up (case-insensitively).
//
// SetKey and SetHeaders encode, KeyFrom and HeadersFrom decode.

// Headers of the exact forms of a record's key and headers.
const (
	// HeaderKeyBase64 carries a key that cannot travel as-is, base64.
	HeaderKeyBase64 = "Ms2m-Key-Base64"
	// HeaderRecordHeaders lists all the record's headers, exactly.
	HeaderRecordHeaders = "Ms2m-Headers"
)

// plain reports whether s travels as an HTTP field value unchanged through
// any server: printable ASCII, not starting or ending with a space.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return s == "" || (s[0] != ' ' && s[len(s)-1] != ' ')
}

// token reports whether s is an HTTP field name (RFC 9110 token).
func token(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// SetKey sets key's header in h: Ms2m-Key when the key is plain,
// Ms2m-Key-Base64 otherwise, none when key is nil. An empty key is plain.
func SetKey(h http.Header, key []byte) {
	h.Del(HeaderKey)
	h.Del(HeaderKeyBase64)
	switch {
	case key == nil:
	case plain(string(key)):
		h.Set(HeaderKey, string(key))
	default:
		h.Set(HeaderKeyBase64, base64.StdEncoding.EncodeToString(key))
	}
}

// KeyFrom returns the record key SetKey put in h; ok is false when the
// record has no key. It fails when the headers are malformed: both forms, a
// form repeated, or invalid base64.
func KeyFrom(h http.Header) (key []byte, ok bool, err error) {
	raw, b64 := h.Values(HeaderKey), h.Values(HeaderKeyBase64)
	switch {
	case len(raw) == 0 && len(b64) == 0:
		return nil, false, nil
	case len(raw)+len(b64) > 1:
		return nil, false, fmt.Errorf("%d %s and %d %s headers, want one", len(raw), HeaderKey, len(b64), HeaderKeyBase64)
	case len(raw) == 1:
		return []byte(raw[0]), true, nil
	}
	key, err = base64.StdEncoding.DecodeString(b64[0])
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", HeaderKeyBase64, err)
	}
	return key, true, nil
}

// SetHeaders adds the headers of a record's headers to h, which holds none
// yet: Ms2m-Headers (absent when there are none) and the Ms2m-Header-<name>
// conveniences.
func SetHeaders(h http.Header, headers []kafka.Header) {
	if len(headers) == 0 {
		return
	}
	enc := base64.StdEncoding
	n := 0
	for _, kh := range headers {
		n += enc.EncodedLen(len(kh.Key)) + 1 + enc.EncodedLen(len(kh.Value)) + 1
	}
	b := make([]byte, 0, n)
	for i, kh := range headers {
		if i > 0 {
			b = append(b, ',')
		}
		b = enc.AppendEncode(b, []byte(kh.Key))
		b = append(b, ':')
		b = enc.AppendEncode(b, kh.Value)
		if token(kh.Key) && plain(string(kh.Value)) {
			h.Add(HeaderPrefix+kh.Key, string(kh.Value))
		}
	}
	h.Set(HeaderRecordHeaders, string(b))
}

// HeadersFrom returns the record headers SetHeaders put in h, exactly: names
// with their case, values, order and duplicates; nil when the record has
// none. An empty value comes back nil. It reads Ms2m-Headers only (several
// lines are one comma-separated list) and fails when it is malformed.
func HeadersFrom(h http.Header) ([]kafka.Header, error) {
	var out []kafka.Header
	for _, line := range h.Values(HeaderRecordHeaders) {
		for entry := range strings.SplitSeq(line, ",") {
			entry = strings.Trim(entry, " \t")
			if entry == "" {
				continue // an empty list element (RFC 9110 §5.6.1); an entry never is
			}
			name, value, found := strings.Cut(entry, ":")
			if !found {
				return nil, fmt.Errorf("%s: entry %q has no ':'", HeaderRecordHeaders, entry)
			}
			n, err := base64.StdEncoding.DecodeString(name)
			if err != nil {
				return nil, fmt.Errorf("%s: name of entry %q: %w", HeaderRecordHeaders, entry, err)
			}
			v, err := base64.StdEncoding.DecodeString(value)
			if err != nil {
				return nil, fmt.Errorf("%s: value of entry %q: %w", HeaderRecordHeaders, entry, err)
			}
			if len(v) == 0 {
				v = nil
			}
			out = append(out, kafka.Header{Key: string(n), Value: v})
		}
	}
	return out, nil
}
