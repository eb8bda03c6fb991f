package checkpoint

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Checkpoint images go only to the allowed registries, and never over
// plain HTTP unless the registry is named for it.
func TestCheckpointImagesGoOnlyWhereAllowed(t *testing.T) {
	regs := NewRegistries("registry.example.com/ms2m/checkpoints", nil, nil)
	if _, err := regs.Reference("registry.example.com/ms2m/checkpoints:orders-0-1a2b3c4d"); err != nil {
		t.Fatalf("the default repository's registry refused: %v", err)
	}
	for _, ref := range []string{
		"attacker.example.net/loot:orders-0-1a2b3c4d",
		"loot:orders-0-1a2b3c4d", // no host: Docker Hub
		"127.0.0.1:5000/loot:orders-0-1a2b3c4d",
	} {
		_, err := regs.Reference(ref)
		if err == nil || !strings.Contains(err.Error(), "not allowed") || !strings.Contains(err.Error(), "--allowed-registries") {
			t.Errorf("%s: %v; want refused, naming --allowed-registries", ref, err)
		}
	}

	// A repository without a registry host would go to Docker Hub.
	for _, repo := range []string{"checkpoints", "team/checkpoints"} {
		if _, err := ParseRepository(repo); err == nil || !strings.Contains(err.Error(), "Docker Hub") {
			t.Errorf("--checkpoint-image-repository=%s: %v; want refused, naming Docker Hub", repo, err)
		}
		if regs := NewRegistries(repo, nil, nil); len(regs.Allowed) != 0 {
			t.Errorf("--checkpoint-image-repository=%s allows pushing to %v", repo, regs.Allowed)
		}
	}

	// A registry on loopback speaks plain HTTP: refused unless named.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v2/", nil)
	tlsOnlyRT := tlsOnly{base: http.DefaultTransport}
	if _, err := tlsOnlyRT.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "plain HTTP") {
		t.Fatalf("plain HTTP to %s: %v; want refused", host, err)
	}
	named := tlsOnly{base: http.DefaultTransport, plainHTTP: []string{host}}
	resp, err := named.RoundTrip(req)
	if err != nil {
		t.Fatalf("plain HTTP to a registry named for it: %v", err)
	}
	_ = resp.Body.Close()
	ref, err := NewRegistries(host+"/checkpoints", nil, []string{host}).Reference(host + "/checkpoints:x")
	if err != nil || ref.Context().Scheme() != "http" {
		t.Fatalf("%s named for plain HTTP: %v, scheme %v", host, err, ref)
	}
}
