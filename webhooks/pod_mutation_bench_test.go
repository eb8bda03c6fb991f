package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
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

// BenchmarkPodAdmissionAt200PodsPerSecond offers migratable pods at a steady
// 200 per second (open loop: an arrival does not wait for the previous
// answer) to the webhook as the API server calls it: an AdmissionReview
// POSTed over TLS on kept-alive connections to controller-runtime's webhook
// handler. Latency counts from each request's send to the patched answer,
// so queueing behind concurrent admissions is included. Run it with
// -benchtime 10s or more: each iteration is one arrival, 5 ms apart.
func BenchmarkPodAdmissionAt200PodsPerSecond(b *testing.B) {
	const rate = 200
	raw, err := json.Marshal(migratablePod())
	if err != nil {
		b.Fatal(err)
	}
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID("bench"),
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: "default", Operation: admissionv1.Create,
			Object: runtime.RawExtension{Raw: raw},
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(&webhook.Admission{
		Handler: NewPodMutator(admission.NewDecoder(scheme.Scheme), DefaultSidecarOptions()),
		// The manager logs admissions only at debug verbosity.
		LogConstructor: func(logr.Logger, *admission.Request) logr.Logger { return logr.Discard() },
	})
	// The API server calls webhooks over HTTP/2: concurrent admissions
	// share one TLS connection.
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	client := srv.Client()
	admit := func() error {
		resp, err := client.Post(srv.URL+PodMutationPath, "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		defer func() { _ = resp.Body.Close() }()
		out, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(out), `"allowed":true`) || !strings.Contains(string(out), `"patch"`) {
			return &unexpectedAnswer{resp.Status, string(out)}
		}
		return nil
	}
	if err := admit(); err != nil { // warm the connection and the handler
		b.Fatal(err)
	}

	var (
		mu   sync.Mutex
		lat  []time.Duration
		errs []error
		wg   sync.WaitGroup
	)
	interval := time.Second / rate
	begin := time.Now()
	i := 0
	for b.Loop() {
		due := begin.Add(time.Duration(i) * interval)
		i++
		// Pacing the arrivals, not synchronising: this is the load's
		// arrival process.
		time.Sleep(time.Until(due))
		wg.Go(func() {
			t0 := time.Now() // the pacing's own lateness is not the webhook's
			err := admit()
			d := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			lat = append(lat, d)
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(begin)
	if len(errs) > 0 {
		b.Fatalf("%d of %d admissions failed, first: %v", len(errs), len(lat), errs[0])
	}
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "pods/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
}

type unexpectedAnswer struct{ status, body string }

func (u *unexpectedAnswer) Error() string { return "webhook answered " + u.status + ": " + u.body }
