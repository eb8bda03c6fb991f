package agent

import (
	"os"
	"path/filepath"
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
