package migratable

import (
	"strings"
	"testing"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
	"github.com/ms2m/ms2m/pkg/replay"
)

func FuzzParseBinding(f *testing.F) {
	f.Add("kafka:9092", "orders", "group", "8080", "/messages", "")
	f.Add("a:1,b:65535", "t", "g", "65535", "/", "64")
	f.Add("[::1]:9092", "t.x-y_z", "g", "1", "/p", "1000")
	f.Add("", "", "", "", "", "0")
	f.Fuzz(func(t *testing.T, brokers, topic, group, port, path, batch string) {
		annotations := map[string]string{
			v1.AnnotationKafkaBrokers: brokers, v1.AnnotationKafkaTopic: topic,
			v1.AnnotationKafkaGroup: group, v1.AnnotationAppPort: port, v1.AnnotationDeliveryPath: path,
		}
		if batch != "" {
			annotations[v1.AnnotationAppBatchSize] = batch
		}
		b, errs := ParseBinding(annotations)
		if len(errs) > 0 {
			return
		}
		// Whatever is accepted is usable by the sidecar as it is.
		if len(b.Brokers) == 0 || b.AppPort < 1 || b.Topic == "" || b.Group == "" || !strings.HasPrefix(b.DeliveryPath, "/") {
			t.Fatalf("accepted an unusable binding %+v", b)
		}
		if b.BatchSize < 0 || b.BatchSize > replay.MaxBatchSize || (batch != "" && b.BatchSize < 1) {
			t.Fatalf("accepted batch size %q as %d", batch, b.BatchSize)
		}
		for _, br := range b.Brokers {
			if validBroker(br) != "" {
				t.Fatalf("accepted invalid broker %q", br)
			}
		}
	})
}
