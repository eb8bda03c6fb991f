package agent

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

func migration(ns, pod string) *v1.StatefulMigration {
	return &v1.StatefulMigration{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "move"}, Spec: v1.StatefulMigrationSpec{SourcePod: pod}}
}

// A forged archive annotation cannot make the agent (root on the node)
// read, push or delete a file it did not produce for this migration: a
// host file, another tenant's archive, a path that climbs out of the
// checkpoint directory, or a name it does not give.
func TestOnlyTheKubeletsArchiveOfTheSourceIsAccepted(t *testing.T) {
	dir := "/var/lib/kubelet/checkpoints"
	m := migration("shop", "orders-0")
	ok := dir + "/checkpoint-orders-0_shop-app-2026-12-06T19:30:00Z.tar"
	if err := checkArchive(dir, ok, m, "app"); err != nil {
		t.Fatalf("the kubelet's own archive refused: %v", err)
	}
	if err := checkArchive("", ok, m, "app"); err != nil {
		t.Fatalf("the default directory: %v", err)
	}
	for name, path := range map[string]string{
		"a host file":                   "/etc/kubernetes/admin.conf",
		"the agent's token":             "/var/run/secrets/kubernetes.io/serviceaccount/token",
		"another tenant's archive":      dir + "/checkpoint-ledger-0_bank-app-2026-12-06T19:30:00Z.tar",
		"another container of the pod":  dir + "/checkpoint-orders-0_shop-ms2m-replay-2026-12-06T19:30:00Z.tar",
		"a climb out of the directory":  dir + "/../../../etc/shadow",
		"a subdirectory":                dir + "/x/checkpoint-orders-0_shop-app-2026-12-06T19:30:00Z.tar",
		"a relative path":               "checkpoint-orders-0_shop-app-2026-12-06T19:30:00Z.tar",
		"not the kubelet's time stamp":  dir + "/checkpoint-orders-0_shop-app-latest.tar",
		"not a tar":                     dir + "/checkpoint-orders-0_shop-app-2026-12-06T19:30:00Z.tar.gz",
		"a prefix of another namespace": dir + "/checkpoint-orders-0_shop-eu-app-2026-12-06T19:30:00Z.tar",
	} {
		if err := checkArchive(dir, path, m, "app"); err == nil {
			t.Errorf("%s (%s) accepted", name, path)
		}
	}
}

// The archive is opened without following a symbolic link a tenant might
// have placed, and only as a regular file.
func TestArchiveIsNotOpenedThroughALink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "checkpoint-orders-0_shop-app-2026-12-06T19:30:00Z.tar")
	if err := os.WriteFile(real, []byte("tar"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := openArchive(real)
	if err != nil {
		t.Fatalf("a regular archive: %v", err)
	}
	_ = f.Close()
	secret := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(secret, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "checkpoint-orders-0_shop-app-2026-12-06T19:31:00Z.tar")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	if f, err := openArchive(link); err == nil {
		_ = f.Close()
		t.Fatal("opened an archive that is a symbolic link to another file")
	}
	fifo := filepath.Join(dir, "checkpoint-orders-0_shop-app-2026-12-06T19:32:00Z.tar")
	if err := os.Mkdir(fifo, 0o700); err != nil {
		t.Fatal(err)
	}
	if f, err := openArchive(fifo); err == nil {
		_ = f.Close()
		t.Fatal("opened a directory as an archive")
	}
}

// Checkpoint images go only to the allowed registries, and never over
// plain HTTP unless the registry is named for it.
func TestCheckpointImagesGoOnlyWhereAllowed(t *testing.T) {
	o := Options{Repository: "registry.example.com/ms2m/checkpoints"}
	regs := o.registries()
	if _, err := regs.reference("registry.example.com/ms2m/checkpoints:orders-0-1a2b3c4d"); err != nil {
		t.Fatalf("the default repository's registry refused: %v", err)
	}
	for _, ref := range []string{
		"attacker.example.net/loot:orders-0-1a2b3c4d",
		"loot:orders-0-1a2b3c4d", // no host: Docker Hub
		"127.0.0.1:5000/loot:orders-0-1a2b3c4d",
	} {
		_, err := regs.reference(ref)
		if err == nil || !strings.Contains(err.Error(), "not allowed") || !strings.Contains(err.Error(), "--allowed-registries") {
			t.Errorf("%s: %v; want refused, naming --allowed-registries", ref, err)
		}
	}

	// A repository without a registry host would go to Docker Hub.
	for _, repo := range []string{"checkpoints", "team/checkpoints"} {
		if err := (Options{Repository: repo}).ValidateRepository(); err == nil || !strings.Contains(err.Error(), "Docker Hub") {
			t.Errorf("--checkpoint-image-repository=%s: %v; want refused, naming Docker Hub", repo, err)
		}
		if regs := (Options{Repository: repo}).registries(); len(regs.allowed) != 0 {
			t.Errorf("--checkpoint-image-repository=%s allows pushing to %v", repo, regs.allowed)
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
	o = Options{Repository: host + "/checkpoints", PlainHTTPRegistries: []string{host}}
	ref, err := o.registries().reference(host + "/checkpoints:x")
	if err != nil || ref.Context().Scheme() != "http" {
		t.Fatalf("%s named for plain HTTP: %v, scheme %v", host, err, ref)
	}
}
