package migratable

import (
	"net"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/replay"
)

// DefaultDeliveryPath is where the sidecar POSTs messages when the pod sets
// no ms2m.io/delivery-path.
const DefaultDeliveryPath = "/messages"

// Binding is where a pod's messages come from and how they reach its app:
// read from its ms2m.io/* annotations, or, for a migration, resolved with
// the StatefulMigration's spec (Resolve).
type Binding struct {
	Brokers      []string
	Topic        string
	Group        string
	AppPort      int32
	DeliveryPath string
	// BatchSize is 0 when the app did not opt in to batches.
	BatchSize int
	// MaxAttempts and DeadLetterTopic are the poison-message policy; zero
	// values take the sidecar's defaults.
	MaxAttempts     int
	DeadLetterTopic string
	// QuiescePath is where the app is told that a checkpoint is next; ""
	// when it did not opt in.
	QuiescePath string
}

var annotationsPath = field.NewPath("metadata", "annotations")

// IsMigratable reports whether the pod opted in, and refuses values other
// than "true" and "false" so a typo does not silently disable migration.
func IsMigratable(annotations map[string]string) (bool, *field.Error) {
	v, ok := annotations[v1.AnnotationMigratable]
	if !ok {
		return false, nil
	}
	switch v {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, field.NotSupported(annotationsPath.Key(v1.AnnotationMigratable), v, []string{"true", "false"})
}

// ParseBinding reads and checks the ms2m.io/kafka-*, ms2m.io/app-port,
// ms2m.io/delivery-path, ms2m.io/app-batch-size,
// ms2m.io/max-delivery-attempts and ms2m.io/dead-letter-topic annotations of a
// migratable pod. Every problem is reported, each naming
// its annotation.
func ParseBinding(annotations map[string]string) (Binding, field.ErrorList) {
	var b Binding
	var errs field.ErrorList
	required := func(key string) (string, bool) {
		v := strings.TrimSpace(annotations[key])
		if v == "" {
			errs = append(errs, field.Required(annotationsPath.Key(key), "a migratable pod needs it"))
			return "", false
		}
		return v, true
	}

	if v, ok := required(v1.AnnotationKafkaBrokers); ok {
		for _, addr := range strings.Split(v, ",") {
			addr = strings.TrimSpace(addr)
			if msg := validBroker(addr); msg != "" {
				errs = append(errs, field.Invalid(annotationsPath.Key(v1.AnnotationKafkaBrokers), addr, msg))
				continue
			}
			b.Brokers = append(b.Brokers, addr)
		}
	}
	if v, ok := required(v1.AnnotationKafkaTopic); ok {
		if !validKafkaName(v, 249) {
			errs = append(errs, field.Invalid(annotationsPath.Key(v1.AnnotationKafkaTopic), v,
				"must be 1-249 characters of letters, digits, '.', '_' and '-'"))
		}
		b.Topic = v
	}
	if v, ok := required(v1.AnnotationKafkaGroup); ok {
		if !validKafkaName(v, 255) {
			errs = append(errs, field.Invalid(annotationsPath.Key(v1.AnnotationKafkaGroup), v,
				"must be 1-255 characters of letters, digits, '.', '_' and '-'"))
		}
		b.Group = v
	}
	if v, ok := required(v1.AnnotationAppPort); ok {
		port, err := strconv.Atoi(v)
		if err != nil || port < 1 || port > 65535 {
			errs = append(errs, field.Invalid(annotationsPath.Key(v1.AnnotationAppPort), v, "must be a port number between 1 and 65535"))
		}
		b.AppPort = int32(port)
	}
	// urlPath reads an optional annotation holding an absolute URL path.
	urlPath := func(key, example string) (string, bool) {
		v, ok := annotations[key]
		if ok && (!strings.HasPrefix(v, "/") || strings.ContainsAny(v, " ?#\t\n")) {
			errs = append(errs, field.Invalid(annotationsPath.Key(key), v,
				"must be an absolute URL path such as "+example+", without query or fragment"))
		}
		return v, ok
	}
	b.DeliveryPath = DefaultDeliveryPath
	if v, ok := urlPath(v1.AnnotationDeliveryPath, "/messages"); ok {
		b.DeliveryPath = v
	}
	if v, ok := urlPath(v1.AnnotationAppQuiescePath, replay.QuiescePath); ok {
		if v == b.DeliveryPath {
			errs = append(errs, field.Invalid(annotationsPath.Key(v1.AnnotationAppQuiescePath), v,
				"must differ from "+v1.AnnotationDeliveryPath+" (default "+DefaultDeliveryPath+"): the app would take it for a message"))
		}
		b.QuiescePath = v
	}
	// count reads an optional annotation holding a number from 1 to most.
	count := func(key, unit string, most int) int {
		v, ok := annotations[key]
		if !ok {
			return 0
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > most {
			errs = append(errs, field.Invalid(annotationsPath.Key(key), v,
				"must be a number of "+unit+" between 1 and "+strconv.Itoa(most)))
		}
		return n
	}
	b.BatchSize = count(v1.AnnotationAppBatchSize, "messages", replay.MaxBatchSize)
	b.MaxAttempts = count(v1.AnnotationMaxDeliveryAttempts, "attempts", replay.MaxDeliveryAttempts)
	if v, ok := annotations[v1.AnnotationDeadLetterTopic]; ok {
		if !validKafkaName(v, 249) {
			errs = append(errs, field.Invalid(annotationsPath.Key(v1.AnnotationDeadLetterTopic), v,
				"must be 1-249 characters of letters, digits, '.', '_' and '-'"))
		} else if v == b.Topic {
			errs = append(errs, field.Invalid(annotationsPath.Key(v1.AnnotationDeadLetterTopic), v,
				"must differ from "+v1.AnnotationKafkaTopic+": a refused message would be consumed again"))
		}
		b.DeadLetterTopic = v
	}
	return b, errs
}

func validBroker(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return "must be host:port, for example kafka-0.kafka:9092"
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return "port must be between 1 and 65535"
	}
	if net.ParseIP(host) == nil && len(validation.IsDNS1123Subdomain(strings.ToLower(host))) > 0 {
		return "host must be an IP address or a DNS name"
	}
	return ""
}

func validKafkaName(s string, maxLen int) bool {
	if len(s) == 0 || len(s) > maxLen {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// Resolve is a migration's binding: the source pod's annotations (checked
// as the webhook checks them), with what spec.messageQueueConfig sets
// (brokers, topic, consumer group) in their place. The one place where the
// spec overrides the annotations.
func Resolve(m *v1.StatefulMigration, pod *corev1.Pod) (Binding, field.ErrorList) {
	b, errs := ParseBinding(pod.Annotations)
	if q := m.Spec.MessageQueueConfig; q != nil {
		if len(q.Brokers) > 0 {
			b.Brokers = make([]string, 0, len(q.Brokers))
			for _, x := range q.Brokers {
				b.Brokers = append(b.Brokers, string(x))
			}
		}
		if q.Topic != "" {
			b.Topic = q.Topic
		}
		if q.ConsumerGroup != "" {
			b.Group = q.ConsumerGroup
		}
	}
	return b, errs
}
