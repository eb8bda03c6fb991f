package charts_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/internal/testenv"
	"github.com/ms2m/ms2m/pkg/manager"
)

// TestInstallKeepsThenRotatesCertificates installs the chart into a real
// API server (which validates every object), then upgrades it: the
// generated certificates survive an upgrade unchanged (no needless manager
// restart, no caBundle churn) until their renewal time, after which the
// upgrade issues new ones and the webhook's caBundle follows.
func TestInstallKeepsThenRotatesCertificates(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	kubeconfig := env.KubeconfigFile(t)
	ctx := context.Background()
	helmRelease := func(verb string) string {
		t.Helper()
		// CRDs: envtest installed the chart's crds/ already.
		out, err := runHelm(t, verb, release, chartDir(), "--namespace", namespace, "--create-namespace", "--skip-crds", "--kubeconfig", kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	type state struct{ ca, cert, bundle, checksum string }
	read := func() state {
		t.Helper()
		secret := &corev1.Secret{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: release + "-serving-cert"}, secret); err != nil {
			t.Fatal(err)
		}
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: release + "-mutating-webhook-configuration"}, mwc); err != nil {
			t.Fatal(err)
		}
		vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: release + "-validating-webhook-configuration"}, vwc); err != nil {
			t.Fatal(err)
		}
		if string(vwc.Webhooks[0].ClientConfig.CABundle) != string(mwc.Webhooks[0].ClientConfig.CABundle) {
			t.Errorf("the validating and mutating webhooks trust different CAs")
		}
		dep := &appsv1.Deployment{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: release + "-manager"}, dep); err != nil {
			t.Fatal(err)
		}
		return state{string(secret.Data["ca.crt"]), string(secret.Data["tls.crt"]), string(mwc.Webhooks[0].ClientConfig.CABundle),
			dep.Spec.Template.Annotations["checksum/serving-cert"]}
	}

	// The notes tell what is left to do: the kube-scheduler.
	if notes := helmRelease("install"); !strings.Contains(notes, "Configure the kube-scheduler") || strings.Contains(notes, "WARNING") {
		t.Errorf("install notes do not say to configure the kube-scheduler, or warn needlessly:\n%s", notes)
	}
	installed := read()
	if installed.ca == "" || installed.bundle != installed.ca {
		t.Fatalf("after install the webhook's caBundle is not the Secret's CA")
	}
	for _, name := range []string{release + "-manager", release + "-agent"} {
		if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, &rbacv1.ClusterRole{}); err != nil {
			t.Errorf("ClusterRole %s: %v", name, err)
		}
	}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: release + "-agent"}, &appsv1.DaemonSet{}); err != nil {
		t.Errorf("agent DaemonSet: %v", err)
	}

	helmRelease("upgrade")
	if upgraded := read(); upgraded != installed {
		t.Errorf("an upgrade before the renewal time changed the certificates or restarted the manager")
	}

	// The manager renews the serving certificate itself (its rotator,
	// --serving-cert-secret) with the CA's key the Secret holds, keeping
	// the CA: the next upgrade keeps what it wrote.
	byManager := &corev1.Secret{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: release + "-serving-cert"}, byManager); err != nil {
		t.Fatal(err)
	}
	caKey := string(byManager.Data["ca.key"])
	cert, key, renewAt, err := manager.RenewServingCert(byManager.Data, time.Now())
	if err != nil {
		t.Fatalf("the manager cannot renew the chart's certificate: %v", err)
	}
	byManager.Data["tls.crt"], byManager.Data["tls.key"] = cert, key
	byManager.Annotations[manager.AnnotationRenewAfter] = strconv.FormatInt(renewAt.Unix(), 10)
	if err := env.Client.Update(ctx, byManager); err != nil {
		t.Fatal(err)
	}
	helmRelease("upgrade")
	kept := &corev1.Secret{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: release + "-serving-cert"}, kept); err != nil {
		t.Fatal(err)
	}
	if string(kept.Data["tls.crt"]) != string(cert) || string(kept.Data["ca.key"]) != caKey || read().ca != installed.ca || read().bundle != installed.ca {
		t.Errorf("an upgrade after the manager renewed the certificate replaced it, its CA or the CA's key")
	}

	// Past the renewal time: the next upgrade rotates.
	secret := &corev1.Secret{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: release + "-serving-cert"}, secret); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(secret.DeepCopy())
	secret.Annotations["ms2m.io/renew-after"] = "1"
	if err := env.Client.Patch(ctx, secret, patch); err != nil {
		t.Fatal(err)
	}
	helmRelease("upgrade")
	rotated := read()
	if rotated.cert == installed.cert || rotated.ca == installed.ca {
		t.Errorf("an upgrade after the renewal time kept the old certificate")
	}
	if rotated.bundle != rotated.ca {
		t.Errorf("after rotation the webhook's caBundle is not the new CA")
	}
	if rotated.checksum == installed.checksum {
		t.Errorf("rotation does not restart the manager (pod template checksum unchanged)")
	}

	// Installed elsewhere, the manager tells the webhook its own identity,
	// which the injected sidecars then accept.
	notes, err := runHelm(t, "install", "elsewhere", chartDir(), "--namespace", "other", "--dry-run=server", "--skip-crds", "--kubeconfig", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(notes, "--sidecar-allowed-users=system:serviceaccount:other:elsewhere-ms2m-manager") || strings.Contains(notes, "WARNING") {
		t.Errorf("installed as release elsewhere in namespace other, the manager does not pass its own identity to the sidecars:\n%s", notes)
	}
}
