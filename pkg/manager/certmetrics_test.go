package manager

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The expiry of the certificate the webhook serves is exported as it is on
// disk, so an alert can fire before the API server starts refusing
// migratable pods; a renewed file is seen at the next scrape.
func TestServingCertificateExpiryIsExported(t *testing.T) {
	dir := t.TempDir()
	write := func(notAfter time.Time) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ms2m-webhook"}, NotBefore: time.Now(), NotAfter: notAfter}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	opts := DefaultOptions()
	opts.WebhookCertDir = dir
	opts.SchedulerExtender.BindAddress, opts.SchedulerExtender.CertFile = ":8444", filepath.Join(dir, "missing.crt")
	c := newCertExpiry(servingCertFiles(opts))
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	expect := func(notAfter time.Time) {
		t.Helper()
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, f := range families {
			for _, m := range f.GetMetric() {
				var labels []string
				for _, l := range m.GetLabel() {
					labels = append(labels, l.GetName()+"="+l.GetValue())
				}
				got = append(got, fmt.Sprintf("%s{%s} %d", f.GetName(), strings.Join(labels, ","), int64(m.GetGauge().GetValue())))
			}
		}
		want := fmt.Sprintf("ms2m_serving_certificate_expiry_timestamp_seconds{endpoint=webhook} %d", notAfter.Unix())
		if len(got) != 1 || got[0] != want {
			t.Fatalf("exported %v; want only %s (the extender's missing file left out)", got, want)
		}
	}
	first := time.Now().Add(20 * 24 * time.Hour).Truncate(time.Second)
	write(first)
	expect(first)
	renewed := first.Add(365 * 24 * time.Hour)
	write(renewed)
	expect(renewed)
}
