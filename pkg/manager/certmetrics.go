package manager

import (
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// certExpiry exports when each serving certificate the manager presents
// expires, read from its file at every scrape (so a certificate renewed on
// disk, which the servers pick up without a restart, is seen at once): the
// API server refuses migratable pods once the webhook's has expired
// (failurePolicy Fail), so the chart alerts weeks before.
type certExpiry struct {
	desc  *prometheus.Desc
	files atomic.Pointer[map[string]string] // endpoint → PEM certificate file
}

// CertExpiryMetric is the name of the serving certificates' expiry gauge
// (label endpoint), which the manager registers when it starts.
const CertExpiryMetric = "ms2m_serving_certificate_expiry_timestamp_seconds"

var certExpiryOpts = prometheus.Opts{
	Name: CertExpiryMetric,
	Help: "When the serving certificate of a manager endpoint (webhook, scheduler-extender) expires, in seconds since the epoch.",
}

func newCertExpiry(files map[string]string) *certExpiry {
	c := &certExpiry{desc: prometheus.NewDesc(certExpiryOpts.Name, certExpiryOpts.Help, []string{"endpoint"}, nil)}
	c.files.Store(&files)
	return c
}

// Describe implements prometheus.Collector.
func (c *certExpiry) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector: an endpoint whose file cannot
// be read or holds no certificate is left out (its server does not serve
// either).
func (c *certExpiry) Collect(ch chan<- prometheus.Metric) {
	for endpoint, file := range *c.files.Load() {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		cert, err := parseCert(b)
		if err != nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(cert.NotAfter.Unix()), endpoint)
	}
}

// servingCertFiles are the certificate files the manager's TLS servers
// read, by endpoint.
func servingCertFiles(opts Options) map[string]string {
	files := map[string]string{}
	if opts.WebhookPort != 0 {
		dir := opts.WebhookCertDir
		if dir == "" { // controller-runtime's default
			dir = filepath.Join(os.TempDir(), "k8s-webhook-server", "serving-certs")
		}
		files["webhook"] = filepath.Join(dir, "tls.crt")
	}
	if opts.SchedulerExtender.Enabled() && opts.SchedulerExtender.CertFile != "" {
		files["scheduler-extender"] = opts.SchedulerExtender.CertFile
	}
	return files
}

// certMetrics is registered once per process (the sandbox restarts its
// manager in process); each start sets the files it serves.
var certMetrics = sync.OnceValue(func() *certExpiry {
	c := newCertExpiry(nil)
	ctrlmetrics.Registry.MustRegister(c)
	return c
})

func registerCertExpiry(opts Options) {
	files := servingCertFiles(opts)
	certMetrics().files.Store(&files)
}
