package sandbox

import (
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/ms2m/ms2m/pkg/checkpoint"
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

// A checkpoint image deleted by digest is gone under its digest and its
// tag, as in the distribution spec's reference registry, and stays gone
// after the registry restarts.
func TestDeletedCheckpointImagesStayDeleted(t *testing.T) {
	blobs, manifests := t.TempDir(), t.TempDir()
	start := func() (string, func()) {
		p := &persistentManifests{dir: manifests, next: registry.New(registry.WithBlobHandler(registry.NewDiskBlobHandler(blobs)),
			registry.Logger(log.New(io.Discard, "", 0)))}
		if err := p.restoreManifests(); err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(p)
		return strings.TrimPrefix(srv.URL, "http://"), srv.Close
	}
	addr, stop := start()
	push := func(tag string) name.Digest {
		img, err := random.Image(1024, 1)
		if err != nil {
			t.Fatal(err)
		}
		idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img})
		ref, err := name.ParseReference(addr + "/checkpoints/orders:" + tag)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.WriteIndex(ref, idx); err != nil {
			t.Fatal(err)
		}
		d, _ := idx.Digest()
		return ref.Context().Digest(d.String())
	}
	gone, kept := push("move-1"), push("move-2")
	regs := checkpoint.NewRegistries(addr+"/checkpoints", nil, []string{addr})
	ref, err := regs.Reference(gone.String())
	if err != nil {
		t.Fatal(err)
	}
	if err := checkpoint.Delete(t.Context(), ref.(name.Digest), regs.Transport(http.DefaultTransport)); err != nil {
		t.Fatal(err)
	}
	if err := checkpoint.Delete(t.Context(), ref.(name.Digest), regs.Transport(http.DefaultTransport)); err != nil {
		t.Fatalf("deleting an image already gone: %v", err)
	}
	stop()
	addr2, stop := start()
	defer stop()
	for _, r := range []string{"/checkpoints/orders:move-1", "/checkpoints/orders@" + gone.DigestStr()} {
		if _, err := remote.Index(mustRef(t, addr2+r)); err == nil {
			t.Errorf("%s can still be pulled after its deletion and a restart", r)
		}
	}
	for _, r := range []string{"/checkpoints/orders:move-2", "/checkpoints/orders@" + kept.DigestStr()} {
		if _, err := remote.Index(mustRef(t, addr2+r)); err != nil {
			t.Errorf("%s, never deleted: %v", r, err)
		}
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// The registry's private repositories answer only to its credentials, as a
// private registry does: an anonymous pull or one with a wrong password is
// refused (401, with a challenge); the open repositories stay open.
func TestPrivateRepositoriesAnswerOnlyToTheRegistryCredentials(t *testing.T) {
	srv := httptest.NewServer(privateRepos{password: "right", next: registry.New(registry.Logger(log.New(io.Discard, "", 0)))})
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	private, err := name.ParseReference(addr + "/" + privateRepositories + "app:v1")
	if err != nil {
		t.Fatal(err)
	}
	open, err := name.ParseReference(addr + "/checkpoints/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	right := remote.WithAuth(&authn.Basic{Username: registryUser, Password: "right"})
	if err := remote.Write(private, img, right); err != nil {
		t.Fatalf("pushing with the credentials: %v", err)
	}
	if err := remote.Write(open, img); err != nil {
		t.Fatalf("pushing to an open repository: %v", err)
	}
	for what, opts := range map[string][]remote.Option{
		"anonymous":        nil,
		"a wrong password": {remote.WithAuth(&authn.Basic{Username: registryUser, Password: "wrong"})},
	} {
		_, err := remote.Head(private, opts...)
		var terr *transport.Error
		if !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s pull of a private image: %v, want 401", what, err)
		}
	}
	if _, err := remote.Head(private, right); err != nil {
		t.Errorf("pull with the credentials: %v", err)
	}
	if _, err := remote.Head(open); err != nil {
		t.Errorf("anonymous pull of an open repository: %v", err)
	}
}
