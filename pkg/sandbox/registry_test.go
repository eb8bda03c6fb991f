package sandbox

import (
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// An image pushed to the sandbox registry can be pulled after the registry
// restarts on the same directory: its blobs were on disk already, and its
// manifests (an index and the image it lists) are kept there too.
func TestRegistryKeepsManifestsAcrossARestart(t *testing.T) {
	blobs, manifests := t.TempDir(), t.TempDir()
	start := func() (*persistentManifests, string, func()) {
		p := &persistentManifests{dir: manifests, next: registry.New(registry.WithBlobHandler(registry.NewDiskBlobHandler(blobs)),
			registry.Logger(log.New(io.Discard, "", 0)))}
		if err := p.restoreManifests(); err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(p)
		return p, strings.TrimPrefix(srv.URL, "http://"), srv.Close
	}
	_, addr, stop := start()
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img})
	ref, err := name.ParseReference(addr + "/checkpoints/orders:move")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	want, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	stop()

	_, addr, stop = start()
	defer stop()
	for _, r := range []string{addr + "/checkpoints/orders:move", addr + "/checkpoints/orders@" + want.String()} {
		ref, err := name.ParseReference(r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := remote.Index(ref)
		if err != nil {
			t.Fatalf("after the restart, %s: %v", r, err)
		}
		if d, _ := got.Digest(); d != want {
			t.Fatalf("after the restart, %s is %s, want %s", r, d, want)
		}
		im, err := got.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := got.Image(im.Manifests[0].Digest); err != nil {
			t.Fatal(err)
		}
		i, _ := got.Image(im.Manifests[0].Digest)
		if layers, err := i.Layers(); err != nil || len(layers) != 1 {
			t.Fatalf("the image's layers after the restart: %v", err)
		}
	}
}
