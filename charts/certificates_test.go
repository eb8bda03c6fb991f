package charts_test

import (
	"crypto/x509"
	"encoding/pem"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// verifyServing checks that the manager's serving certificate, mounted at
// --webhook-cert-dir, is valid for host and signed by the CA in caBundle.
func (m managerPod) verifyServing(t *testing.T, caBundle []byte, host string) {
	t.Helper()
	dep, certDir := m.dep, m.flags["webhook-cert-dir"]
	var secretName string
	for _, vm := range dep.Spec.Template.Spec.Containers[0].VolumeMounts {
		if vm.MountPath == certDir {
			for _, v := range dep.Spec.Template.Spec.Volumes {
				if v.Name == vm.Name && v.Secret != nil {
					secretName = v.Secret.SecretName
				}
			}
		}
	}
	if secretName == "" {
		t.Fatalf("no Secret is mounted at the manager's certificate directory %s", certDir)
	}
	secret := as(t, m.objs.get(t, "Secret", secretName), &corev1.Secret{})
	leaf := parseCert(t, secret.Data["tls.crt"])
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caBundle) {
		t.Fatalf("the CA bundle holds no certificate")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("Secret %s's certificate does not verify for %s with the CA bundle: %v", secretName, host, err)
	}
	if string(secret.Data["ca.crt"]) != string(caBundle) {
		t.Errorf("Secret %s's ca.crt is not the CA bundle given to the API server", secretName)
	}
}

func parseCert(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatal("no PEM certificate")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCertManager(t *testing.T) {
	objs := render(t, "--set", "certificates.certManager.enabled=true")
	for _, s := range objs.ofKind("Secret") {
		if s.Object["type"] == string(corev1.SecretTypeTLS) {
			t.Errorf("the chart generates Secret %s although cert-manager issues the certificate", s.GetName())
		}
	}
	dep := as(t, objs.get(t, "Deployment", release+"-manager"), &appsv1.Deployment{})
	var secretName string
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			secretName = v.Secret.SecretName
		}
	}
	var serving *unstructured.Unstructured
	for _, c := range objs.ofKind("Certificate") {
		if n, _, _ := unstructured.NestedString(c.Object, "spec", "secretName"); n == secretName {
			serving = c
		}
	}
	if serving == nil {
		t.Fatalf("no Certificate writes the Secret %s the manager mounts", secretName)
	}
	dnsNames, _, _ := unstructured.NestedStringSlice(serving.Object, "spec", "dnsNames")
	for _, host := range []string{release + "-webhook." + namespace + ".svc", release + "-scheduler-extender." + namespace + ".svc"} {
		if !slices.Contains(dnsNames, host) {
			t.Errorf("Certificate %s does not cover %s: %v", serving.GetName(), host, dnsNames)
		}
	}
	// The issuer is a CA Issuer whose CA is itself issued by the chart.
	issuerName, _, _ := unstructured.NestedString(serving.Object, "spec", "issuerRef", "name")
	caSecret, _, _ := unstructured.NestedString(objs.get(t, "Issuer", issuerName).Object, "spec", "ca", "secretName")
	var caIssued bool
	for _, c := range objs.ofKind("Certificate") {
		isCA, _, _ := unstructured.NestedBool(c.Object, "spec", "isCA")
		n, _, _ := unstructured.NestedString(c.Object, "spec", "secretName")
		caIssued = caIssued || isCA && n == caSecret
	}
	if !caIssued {
		t.Errorf("Issuer %s signs with Secret %q, which no CA Certificate writes", issuerName, caSecret)
	}
	for _, kind := range []string{"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"} {
		for _, wc := range objs.ofKind(kind) {
			if got, want := wc.GetAnnotations()["cert-manager.io/inject-ca-from"], namespace+"/"+serving.GetName(); got != want {
				t.Errorf("%s %s: cainjector annotation %q; want %q", kind, wc.GetName(), got, want)
			}
			hooks, _, _ := unstructured.NestedSlice(wc.Object, "webhooks")
			for _, h := range hooks {
				if b, _, _ := unstructured.NestedString(h.(map[string]any), "clientConfig", "caBundle"); b != "" {
					t.Errorf("%s %s has a caBundle the cainjector would fight with", kind, wc.GetName())
				}
			}
		}
	}

	t.Run("an issuer of your own", func(t *testing.T) {
		objs := render(t, "--set", "certificates.certManager.enabled=true,certificates.certManager.issuerRef.name=corp-ca,certificates.certManager.issuerRef.kind=ClusterIssuer")
		if n := len(objs.ofKind("Issuer")); n != 0 {
			t.Errorf("the chart creates %d Issuers although one is given", n)
		}
		c := objs.get(t, "Certificate", release+"-serving-cert")
		ref, _, _ := unstructured.NestedStringMap(c.Object, "spec", "issuerRef")
		if ref["name"] != "corp-ca" || ref["kind"] != "ClusterIssuer" {
			t.Errorf("issuerRef %v", ref)
		}
	})
}
