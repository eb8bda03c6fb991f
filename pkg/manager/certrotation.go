package manager

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// AnnotationRenewAfter on the serving-certificate Secret is when (unix
// seconds) its certificate is renewed: by `helm upgrade`, which keeps the
// Secret until then, and by the manager's rotator.
const AnnotationRenewAfter = "ms2m.io/renew-after"

// Keys of the serving-certificate Secret the chart generates: the CA's
// key is there so the manager can renew the serving certificate without
// changing the CA that the webhook configurations and the kube-scheduler
// trust.
const (
	secretCACert  = "ca.crt"
	secretCAKey   = "ca.key"
	secretTLSCert = corev1.TLSCertKey
	secretTLSKey  = corev1.TLSPrivateKeyKey
)

// The serving-certificate Secret the rotator keeps (the chart's default
// name; the chart renders the Role with the release's).
// +kubebuilder:rbac:groups="",namespace=ms2m-system,resources=secrets,verbs=get;update,resourceNames=ms2m-serving-cert

// certRotator renews the chart's self-signed serving certificate before it
// expires, so the webhook (which fails closed for migratable pods) and the
// scheduler extender keep serving without a `helm upgrade`. It signs a new
// certificate for the same names with the CA in the Secret and writes it
// back; the kubelet updates the mounted files and the servers reload them
// (controller-runtime's certificate watcher). The CA is kept: the webhook
// configurations' caBundle and the kube-scheduler's extender
// configuration stay valid. When the CA itself nears its end, only
// `helm upgrade` (a new CA and caBundle) helps: the rotator says so.
type certRotator struct {
	// reader reads the Secret from the API server (not a cache: the
	// manager may read this one Secret only, not watch them all).
	reader   client.Reader
	writer   client.Writer
	secret   types.NamespacedName
	interval time.Duration
	now      func() time.Time
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: one
// replica writes the Secret.
func (r *certRotator) NeedLeaderElection() bool { return true }

// Start implements manager.Runnable: a check at once, then every interval.
func (r *certRotator) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("serving-cert").WithValues("secret", r.secret.String())
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		renewed, err := r.rotate(ctx)
		switch {
		case err != nil:
			logger.Error(err, "cannot renew the serving certificate; `helm upgrade` renews it")
		case renewed != nil:
			logger.Info("renewed the serving certificate", "notAfter", renewed.NotAfter, "renewAfter", renewed.renewAfter)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

type renewal struct {
	NotAfter   time.Time
	renewAfter time.Time
}

// rotate renews the certificate when the Secret's renew-after time has
// passed; nil when nothing was due.
func (r *certRotator) rotate(ctx context.Context) (*renewal, error) {
	now := time.Now()
	if r.now != nil {
		now = r.now()
	}
	s := &corev1.Secret{}
	if err := r.reader.Get(ctx, r.secret, s); err != nil {
		return nil, err
	}
	after, err := strconv.ParseInt(s.Annotations[AnnotationRenewAfter], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("annotation %s: %q is not unix seconds", AnnotationRenewAfter, s.Annotations[AnnotationRenewAfter])
	}
	if now.Before(time.Unix(after, 0)) {
		return nil, nil
	}
	if len(s.Data[secretCAKey]) == 0 {
		return nil, fmt.Errorf("the Secret has no %s (installed by an older chart): run `helm upgrade` once", secretCAKey)
	}
	cert, key, renewAt, err := RenewServingCert(s.Data, now)
	if err != nil {
		return nil, err
	}
	s.Data[secretTLSCert], s.Data[secretTLSKey] = cert, key
	s.Annotations[AnnotationRenewAfter] = strconv.FormatInt(renewAt.Unix(), 10)
	if err := r.writer.Update(ctx, s); err != nil {
		return nil, err
	}
	leaf, _ := parseCert(cert)
	return &renewal{NotAfter: leaf.NotAfter, renewAfter: renewAt}, nil
}

// RenewServingCert signs, with the CA in data, a new certificate for the
// names of the one in data, as long-lived as it (but not past the CA), and
// says when it is due in turn: as long before its end as the old one was
// due before its own.
func RenewServingCert(data map[string][]byte, now time.Time) (certPEM, keyPEM []byte, renewAt time.Time, err error) {
	ca, err := parseCert(data[secretCACert])
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("%s: %w", secretCACert, err)
	}
	caKey, err := parseKey(data[secretCAKey])
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("%s: %w", secretCAKey, err)
	}
	if pub, ok := caKey.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(ca.PublicKey) {
		return nil, nil, time.Time{}, fmt.Errorf("%s is not the key of %s", secretCAKey, secretCACert)
	}
	old, err := parseCert(data[secretTLSCert])
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("%s: %w", secretTLSCert, err)
	}
	lifetime := old.NotAfter.Sub(old.NotBefore)
	window := lifetime / 4 // renew with a quarter of the lifetime left
	notAfter := now.Add(lifetime)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	if notAfter.Sub(now) < window {
		return nil, nil, time.Time{}, fmt.Errorf("the CA expires on %s: only `helm upgrade` issues a new CA (and caBundle)", ca.NotAfter.Format(time.DateOnly))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: old.Subject, DNSNames: old.DNSNames, IPAddresses: old.IPAddresses,
		NotBefore: now.Add(-5 * time.Minute), NotAfter: notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return nil, nil, time.Time{}, err
	}
	return certPEM, keyPEM, notAfter.Add(-window), nil
}

func parseCert(b []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

// parseKey reads the PEM private keys Helm's genCA and Go write.
func parseKey(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM private key")
	}
	var key any
	var err error
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("a %T cannot sign", key)
	}
	return signer, nil
}
