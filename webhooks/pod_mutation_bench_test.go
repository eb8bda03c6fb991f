package webhooks

import (
	"context"
	"encoding/json"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// BenchmarkPodAdmission measures one admission of a migratable pod by the
// handler: decode, parse annotations, inject, JSON patch.
func BenchmarkPodAdmission(b *testing.B) {
	raw, err := json.Marshal(migratablePod())
	if err != nil {
		b.Fatal(err)
	}
	h := NewPodMutator(admission.NewDecoder(scheme.Scheme), DefaultSidecarOptions())
	req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw},
	}}
	b.ReportAllocs()
	for b.Loop() {
		if resp := h.Handle(context.Background(), req); !resp.Allowed || len(resp.Patches) == 0 {
			b.Fatalf("not mutated: %+v", resp.Result)
		}
	}
}
