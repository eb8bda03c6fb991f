package checkpoint

import (
	"bytes"
	"testing"
	"time"

	"github.com/ms2m/ms2m/pkg/simcriu"
)

// The image carries the checkpointed process's user and working directory
// in its config, and names the base image on the manifest: a kubelet
// checks a runAsNonRoot container without runAsUser against the image's
// User (none means root), and CRI-O and checkpointctl read the base image
// from the manifest.
func TestImageCarriesTheUserAndTheBaseImage(t *testing.T) {
	a := &simcriu.Archive{
		Config: simcriu.ContainerConfig{Name: "app", RootfsImageName: "registry.example/shop/orders:1.4", CheckpointedTime: time.Unix(1764064800, 0).UTC()},
		Spec: simcriu.Spec{Process: simcriu.Process{User: simcriu.User{UID: 10001, GID: 10002}, Cwd: "/srv",
			Args: []string{"/orders"}}},
		Memory: bytes.Repeat([]byte("p"), 1<<20), // the pages come first in the tar
	}
	var buf bytes.Buffer
	if err := a.Write(&buf); err != nil {
		t.Fatal(err)
	}
	info, err := ReadContainerInfo(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if info != (ContainerInfo{BaseImage: "registry.example/shop/orders:1.4", User: "10001:10002", WorkingDir: "/srv"}) {
		t.Fatalf("read %+v", info)
	}
	idx, err := Build(BytesOpener(buf.Bytes()), Metadata{Container: "app", BaseImage: info.BaseImage, User: info.User, WorkingDir: info.WorkingDir})
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if got := im.Annotations[AnnotationCRIUImageName]; got != info.BaseImage {
		t.Errorf("index %s = %q, want the base image", AnnotationCRIUImageName, got)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "10001:10002" || cf.Config.WorkingDir != "/srv" {
		t.Errorf("image config user %q, working dir %q; want 10001:10002 and /srv", cf.Config.User, cf.Config.WorkingDir)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{AnnotationCRIORootfsImageName, AnnotationCRIURootfsImageName} {
		if m.Annotations[k] != info.BaseImage {
			t.Errorf("manifest %s = %q, want the base image", k, m.Annotations[k])
		}
	}
	if _, err := ReadContainerInfo(bytes.NewReader(nil)); err == nil {
		t.Error("an empty archive must be refused")
	}
}
