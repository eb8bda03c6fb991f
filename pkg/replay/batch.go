package replay

import (
	"encoding/json"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"
)

// Batch delivery is an app's opt-in (ms2m.io/app-batch-size, MS2M_APP_BATCH_SIZE):
// one HTTP round trip per message caps delivery near 10,000 msg/s on a small
// node, which is too slow to replay a backlog; a POST of many messages
// amortises it. The format is JSON so that any language decodes it; keys,
// values and header values are bytes and travel base64-encoded, as Go's
// encoding/json does for []byte. Header names are JSON strings, which hold
// any valid UTF-8 (a Kafka string is UTF-8); a name that is not valid UTF-8
// would be mangled, so it travels base64 in keyBase64 instead.

// BatchContentType is the Content-Type of a batch POST.
const BatchContentType = "application/vnd.ms2m.batch+json"

// HeaderBatchSize carries the number of messages in a batch POST.
const HeaderBatchSize = "Ms2m-Batch-Size"

// MaxBatchSize bounds MS2M_APP_BATCH_SIZE (and the annotation).
const MaxBatchSize = 1000

// MaxBatchBytes bounds the keys and values gathered into one batch: the
// sidecar stops adding messages once a batch holds this much (a single larger
// message still goes alone).
const MaxBatchBytes = 4 << 20

// Batch is the body of a batch POST. Within a batch, the messages of a
// partition are in offset order; partitions may be interleaved. All messages
// of a batch are either replayed or live, never mixed.
type Batch struct {
	// Replay is true when the messages are replayed on a migration target
	// (as the Ms2m-Replay header): rebuild state, suppress side effects.
	Replay   bool           `json:"replay,omitempty"`
	Messages []BatchMessage `json:"messages"`
}

// BatchMessage is one Kafka record of a Batch.
type BatchMessage struct {
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
	Key       []byte `json:"key,omitempty"`
	// Value is null for a tombstone (a record without value).
	Value   []byte        `json:"value"`
	Headers []BatchHeader `json:"headers,omitempty"`
	// PreviousOffset is as HeaderPreviousOffset.
	PreviousOffset *int64 `json:"previousOffset,omitempty"`
}

// BatchHeader is a Kafka record header. Its name is Key, or KeyBase64 when
// that is set (a name that is not valid UTF-8, Key then being empty): Name
// returns it either way.
type BatchHeader struct {
	Key       string `json:"key"`
	KeyBase64 []byte `json:"keyBase64,omitempty"`
	Value     []byte `json:"value"`
}

// Name is the header's name, exactly as in the record.
func (h BatchHeader) Name() string {
	if h.KeyBase64 != nil {
		return string(h.KeyBase64)
	}
	return h.Key
}

func batchHeader(h kafka.Header) BatchHeader {
	if utf8.ValidString(h.Key) {
		return BatchHeader{Key: h.Key, Value: h.Value}
	}
	return BatchHeader{KeyBase64: []byte(h.Key), Value: h.Value}
}

// encodeBatch renders msgs as a Batch body. prev gives a partition's
// previous acknowledged offset before msgs (nil or -1: unknown); within the
// batch it is the message before.
func encodeBatch(msgs []kafka.Message, replayed bool, prev func(kafka.Message) int64) ([]byte, error) {
	b := Batch{Replay: replayed, Messages: make([]BatchMessage, len(msgs))}
	last := map[int]int64{}
	for i, m := range msgs {
		bm := BatchMessage{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Key: m.Key, Value: m.Value}
		if o, ok := last[m.Partition]; ok {
			bm.PreviousOffset = &o
		} else if prev != nil {
			if o := prev(m); o >= 0 {
				bm.PreviousOffset = &o
			}
		}
		last[m.Partition] = m.Offset
		if len(m.Headers) > 0 {
			bm.Headers = make([]BatchHeader, len(m.Headers))
			for j, h := range m.Headers {
				bm.Headers[j] = batchHeader(h)
			}
		}
		b.Messages[i] = bm
	}
	return json.Marshal(b)
}
