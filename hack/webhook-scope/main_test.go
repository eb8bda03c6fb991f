package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ms2m/ms2m/webhooks"
)

const generated = `---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: mutating-webhook-configuration
webhooks:
- failurePolicy: Fail
  name: pods.ms2m.io
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: validating-webhook-configuration
webhooks:
- failurePolicy: Ignore
  name: evictions.ms2m.io
`

func write(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "manifests.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Scoping what controller-gen wrote gives each webhook its scope, and
// scoping again changes nothing (make generate may run it on its output).
func TestScopeIsWrittenOnceAndStays(t *testing.T) {
	path := write(t, generated)
	if err := scope(path, webhooks.Scopes()); err != nil {
		t.Fatal(err)
	}
	once, _ := os.ReadFile(path)
	for _, want := range []string{"matchConditions:", "ms2m.io/migratable", "kubernetes.io/metadata.name", "kube-system"} {
		if !strings.Contains(string(once), want) {
			t.Errorf("scoped configuration lacks %q:\n%s", want, once)
		}
	}
	if n := strings.Count(string(once), "namespaceSelector:"); n != 2 {
		t.Errorf("%d namespaceSelectors; want one per webhook:\n%s", n, once)
	}
	if err := scope(path, webhooks.Scopes()); err != nil {
		t.Fatal(err)
	}
	if twice, _ := os.ReadFile(path); string(twice) != string(once) {
		t.Errorf("scoping twice changed the file:\n%s\nthen\n%s", once, twice)
	}
}

// A webhook added to the markers without a scope is not registered for
// the whole cluster by omission: generation fails naming it.
func TestWebhookWithoutScopeFailsGeneration(t *testing.T) {
	path := write(t, generated+"- failurePolicy: Fail\n  name: new.ms2m.io\n")
	err := scope(path, webhooks.Scopes())
	if err == nil || !strings.Contains(err.Error(), "new.ms2m.io") {
		t.Fatalf("err = %v; want one naming the webhook without a scope", err)
	}
}
