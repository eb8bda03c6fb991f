package manager

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/ms2m/ms2m/internal/testenv"
)

// TestManagerRenewsTheChartsServingCertificate: the Secret exactly as the
// chart generates it (helm template, Helm's own CA and keys), past its
// renewal time, is renewed by the manager under the RBAC the code
// generates: a new serving certificate for the same names, signed by the
// same CA (so the webhook configurations and the kube-scheduler keep
// trusting it), and the next renewal time moved on. Until this change only
// `helm upgrade` renewed it, and with the pod webhook failing closed an
// expired certificate refuses every migratable pod.
func TestManagerRenewsTheChartsServingCertificate(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ctx := context.Background()
	admin := kubernetes.NewForConfigOrDie(env.Config)
	const ns = "ms2m-system"
	managerConfig := managerUnderGeneratedRole(t, admin, env.Config)
	out, err := testenv.Helm(ctx, t.TempDir(), "template", "ms2m", filepath.Join(testenv.RepoRoot(), "charts", "ms2m"), "--namespace", ns,
		"--show-only", "templates/certificates/selfsigned.yaml", "--kube-version", "1.37.2")
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{}
	if err := yaml.Unmarshal([]byte(out), secret); err != nil {
		t.Fatal(err)
	}
	if len(secret.Data["ca.key"]) == 0 {
		t.Fatal("the chart's Secret holds no ca.key: the manager cannot renew the certificate")
	}
	secret.Annotations[AnnotationRenewAfter] = strconv.FormatInt(time.Now().Add(-time.Minute).Unix(), 10)
	if _, err := admin.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	asManager, err := client.New(managerConfig, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := &certRotator{reader: asManager, writer: asManager, secret: types.NamespacedName{Namespace: ns, Name: secret.Name}}
	renewed, err := r.rotate(ctx)
	if err != nil || renewed == nil {
		t.Fatalf("rotate: %v, %v; want renewed", renewed, err)
	}

	got, err := admin.CoreV1().Secrets(ns).Get(ctx, secret.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Data["ca.crt"]) != string(secret.Data["ca.crt"]) || string(got.Data["tls.crt"]) == string(secret.Data["tls.crt"]) {
		t.Fatal("want the same CA and a new certificate")
	}
	old, _ := parseCert(secret.Data["tls.crt"])
	leaf, err := parseCert(got.Data["tls.crt"])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(got.Data["ca.crt"])
	for _, dns := range old.DNSNames {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: dns, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("the renewed certificate for %s does not verify against the CA: %v", dns, err)
		}
	}
	if d := leaf.NotAfter.Sub(time.Now()); d < 364*24*time.Hour {
		t.Errorf("the renewed certificate lasts %s; want the chart's 365 days", d)
	}
	next, _ := strconv.ParseInt(got.Annotations[AnnotationRenewAfter], 10, 64)
	if due := time.Unix(next, 0); due.Before(time.Now().Add(200*24*time.Hour)) || !due.Before(leaf.NotAfter) {
		t.Errorf("next renewal at %s for a certificate ending %s", due, leaf.NotAfter)
	}
	if renewed, err := r.rotate(ctx); err != nil || renewed != nil {
		t.Errorf("a second check renewed again: %v, %v", renewed, err)
	}
	// The Role names this Secret only.
	other := &corev1.Secret{}
	if err := asManager.Get(ctx, client.ObjectKey{Namespace: ns, Name: "something-else"}, other); !apierrors.IsForbidden(err) {
		t.Errorf("the manager reading another Secret: %v; want 403 Forbidden", err)
	}
}

// A CA at its end cannot sign a certificate that outlives it: the renewal
// is refused with what to do, and one without the CA's key says so.
func TestRenewalNeedsALivingCA(t *testing.T) {
	now := time.Now()
	ca, caKey := testCA(t, now.Add(10*24*time.Hour))
	leaf := testLeaf(t, ca, caKey, now.Add(-300*24*time.Hour), now.Add(65*24*time.Hour))
	keyDER, _ := x509.MarshalPKCS8PrivateKey(caKey)
	data := map[string][]byte{"ca.crt": ca.raw, "ca.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), "tls.crt": leaf}
	if _, _, _, err := RenewServingCert(data, now); err == nil || !strings.Contains(err.Error(), "helm upgrade") {
		t.Errorf("renewal under a CA that expires in 10 days: %v; want refused, naming helm upgrade", err)
	}
	_, otherKey := testCA(t, now.Add(1000*24*time.Hour))
	otherDER, _ := x509.MarshalPKCS8PrivateKey(otherKey)
	data["ca.key"] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: otherDER})
	if _, _, _, err := RenewServingCert(data, now); err == nil || !strings.Contains(err.Error(), "not the key of") {
		t.Errorf("renewal with another CA's key: %v; want refused", err)
	}
}

type testCert struct {
	*x509.Certificate
	raw []byte
}

func testCA(t *testing.T, notAfter time.Time) (testCert, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ms2m-ca"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return testCert{c, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, key
}

func testLeaf(t *testing.T, ca testCert, caKey *ecdsa.PrivateKey, notBefore, notAfter time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "ms2m-webhook.ms2m-system.svc"},
		DNSNames: []string{"ms2m-webhook.ms2m-system.svc"}, NotBefore: notBefore, NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Certificate, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
