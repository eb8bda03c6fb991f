package checkpoint

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ms2m/ms2m/pkg/simcriu"
)

// startRegistry runs go-containerregistry's registry with blobs on disk:
// the same registry the sandbox runs.
func startRegistry(tb testing.TB) string {
	tb.Helper()
	srv := httptest.NewServer(registry.New(registry.WithBlobHandler(registry.NewDiskBlobHandler(tb.TempDir()))))
	tb.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func archiveBytes(tb testing.TB, memory []byte) []byte {
	tb.Helper()
	a := &simcriu.Archive{
		Config: simcriu.ContainerConfig{Name: "app", RootfsImageName: "ghcr.io/ms2m/ms2m:v0.1.0", CheckpointedTime: time.Unix(1764064800, 0).UTC()},
		Spec:   simcriu.Spec{Process: simcriu.Process{Args: []string{"/ms2m/example-consumer"}}},
		Memory: memory,
	}
	var buf bytes.Buffer
	if err := a.Write(&buf); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// The image goes through a real registry and back with its archive, its
// annotations and OCI media types: an uncompressed layer by default, gzip
// when asked.
func TestCheckpointImageRoundTripThroughRegistry(t *testing.T) {
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", gz), func(t *testing.T) { roundTrip(t, gz) })
	}
}

func roundTrip(t *testing.T, gz bool) {
	reg := startRegistry(t)
	ctx := context.Background()
	meta := Metadata{Container: "app", Pod: "consumer-0", Namespace: "demo", BaseImage: "ghcr.io/ms2m/ms2m:v0.1.0",
		Runtime: simcriu.RuntimeName, Created: time.Date(2026, 11, 25, 22, 0, 0, 0, time.UTC), Gzip: gz}
	wantLayer := types.OCIUncompressedLayer
	if gz {
		wantLayer = types.OCILayer
	}
	archive := archiveBytes(t, []byte(`{"digest":"d1"}`))
	idx, err := Build(BytesOpener(archive), meta)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(reg + "/checkpoints/consumer-0:app")
	if err != nil {
		t.Fatal(err)
	}
	digest, err := Push(ctx, ref, idx)
	if err != nil {
		t.Fatal(err)
	}

	// The runtime sees OCI media types and the annotations it restores by.
	desc, err := remote.Get(digest)
	if err != nil {
		t.Fatal(err)
	}
	if desc.MediaType != types.OCIImageIndex {
		t.Errorf("pushed media type %s, want an OCI index", desc.MediaType)
	}
	got, err := Pull(ctx, digest)
	if err != nil {
		t.Fatal(err)
	}
	meta.Gzip = false // not read back
	if got.Metadata != meta {
		t.Errorf("metadata after pull:\n got %+v\nwant %+v", got.Metadata, meta)
	}
	img, _ := got.image.Manifest()
	if img.MediaType != types.OCIManifestSchema1 || img.Config.MediaType != types.OCIConfigJSON || img.Layers[0].MediaType != wantLayer {
		t.Errorf("manifest media types %s / %s / %s, want OCI", img.MediaType, img.Config.MediaType, img.Layers[0].MediaType)
	}
	rc, err := got.Archive()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	a, err := simcriu.ReadArchive(rc)
	if err != nil {
		t.Fatal(err)
	}
	if string(a.Memory) != `{"digest":"d1"}` {
		t.Errorf("memory after the round trip = %q", a.Memory)
	}
}

func TestPullRejectsOrdinaryImage(t *testing.T) {
	reg := startRegistry(t)
	ref, _ := name.ParseReference(reg + "/plain:v1")
	if err := remote.Write(ref, empty.Image); err != nil {
		t.Fatal(err)
	}
	if _, err := Pull(context.Background(), ref); !errors.Is(err, ErrNotCheckpoint) {
		t.Fatalf("err = %v, want ErrNotCheckpoint", err)
	}
}

func TestBuildNeedsContainerName(t *testing.T) {
	if _, err := Build(BytesOpener(nil), Metadata{}); err == nil || !strings.Contains(err.Error(), "container name") {
		t.Fatalf("err = %v, want one naming the container name", err)
	}
}

// BenchmarkBuildAndPush measures packing an archive into a checkpoint image
// and pushing it to the on-disk registry, per MiB of memory state.
func BenchmarkBuildAndPush(b *testing.B) {
	reg := startRegistry(b)
	for _, c := range []struct {
		mib int
		gz  bool
	}{{1, false}, {16, false}, {16, true}, {256, false}} {
		mib, gz := c.mib, c.gz
		b.Run(fmt.Sprintf("%dMiB/gzip=%v", mib, gz), func(b *testing.B) {
			mem := make([]byte, mib<<20)
			_, _ = io.ReadFull(rand.Reader, mem) // memory pages: incompressible, as the worst case
			archive := archiveBytes(b, mem)
			b.SetBytes(int64(len(archive)))
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				idx, err := Build(BytesOpener(archive), Metadata{Container: "app", Created: time.Unix(int64(i), 0), Gzip: gz})
				if err != nil {
					b.Fatal(err)
				}
				ref, _ := name.ParseReference(fmt.Sprintf("%s/bench:%d", reg, i))
				if _, err := Push(context.Background(), ref, idx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
