// Package checkpoint turns a kubelet checkpoint archive into an OCI image
// that a container runtime restores from, and back. The image is what moves
// a container's state between nodes: pushed by the agent on the source node,
// pulled by the runtime on the target.
//
// The format follows what the runtimes read (see DESIGN.md "Checkpoint image
// format"): one layer holding the archive's files, OCI media types, the
// manifest annotation CRI-O looks for (io.kubernetes.cri-o.annotations.
// checkpoint.name) and containerd's org.criu.checkpoint.* annotations on
// the index.
package checkpoint

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations the runtimes read.
const (
	// AnnotationCRIOCheckpointName on the manifest makes CRI-O restore the
	// named container from the image instead of creating it.
	AnnotationCRIOCheckpointName = "io.kubernetes.cri-o.annotations.checkpoint.name"
	// containerd 2.x reads these on the index.
	AnnotationCRIUContainerName = "org.criu.checkpoint.container.name"
	AnnotationCRIUImageName     = "org.criu.checkpoint.image.name"
	AnnotationCRIURuntimeName   = "org.criu.checkpoint.runtime.name"
	AnnotationCRIUPodName       = "org.criu.checkpoint.pod.name"
	AnnotationCRIUPodNamespace  = "org.criu.checkpoint.pod.namespace"
	AnnotationCreated           = "org.opencontainers.image.created"
	// The base image, on the manifest: CRI-O's name and the one
	// checkpointctl and containerd's tooling use.
	AnnotationCRIORootfsImageName = "io.kubernetes.cri-o.annotations.checkpoint.rootfsImageName"
	AnnotationCRIURootfsImageName = "org.criu.checkpoint.rootfsImageName"
)

// Metadata describes the checkpointed container.
type Metadata struct {
	Container string
	Pod       string
	Namespace string
	// BaseImage is the image the container ran.
	BaseImage string
	Runtime   string
	Created   time.Time
	// User ("uid:gid") and WorkingDir are the checkpointed process's, put
	// into the image's config: the kubelet checks a runAsNonRoot container
	// without runAsUser against the image's User, and an image config
	// without one means root.
	User, WorkingDir string
	// Gzip compresses the layer; by default it is the uncompressed tar
	// (see rawLayer).
	Gzip bool
}

// ErrNotCheckpoint is returned by Pull for an image that carries no
// checkpoint annotation: a runtime would create the container fresh.
var ErrNotCheckpoint = errors.New("image is not a checkpoint image (no " + AnnotationCRIOCheckpointName + " annotation)")

// Build makes the checkpoint image index from the archive that open returns
// (an uncompressed tar, as the kubelet leaves it). The archive is read when
// the layer is hashed or pushed, not held in memory.
func Build(open func() (io.ReadCloser, error), m Metadata) (v1.ImageIndex, error) {
	if m.Container == "" {
		return nil, errors.New("checkpoint image: the container name is required")
	}
	var layer v1.Layer = &rawLayer{open: open}
	var err error
	if m.Gzip {
		if layer, err = tarball.LayerFromOpener(open, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(gzip.BestSpeed)); err != nil {
			return nil, fmt.Errorf("checkpoint image layer: %w", err)
		}
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		return nil, err
	}
	created := m.Created.UTC()
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS, cf.Created = runtime.GOARCH, "linux", v1.Time{Time: created}
	cf.Config.User, cf.Config.WorkingDir = m.User, m.WorkingDir
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	manifestAnn := map[string]string{
		AnnotationCRIOCheckpointName: m.Container,
		AnnotationCreated:            created.Format(time.RFC3339),
	}
	if m.BaseImage != "" {
		manifestAnn[AnnotationCRIORootfsImageName] = m.BaseImage
		manifestAnn[AnnotationCRIURootfsImageName] = m.BaseImage
	}
	img = mutate.Annotations(img, manifestAnn).(v1.Image)
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), mutate.IndexAddendum{
		Add:        img,
		Descriptor: v1.Descriptor{Platform: &v1.Platform{Architecture: runtime.GOARCH, OS: "linux"}},
	})
	return mutate.Annotations(idx, map[string]string{
		AnnotationCRIUContainerName: m.Container,
		AnnotationCRIUImageName:     m.BaseImage,
		AnnotationCRIURuntimeName:   m.Runtime,
		AnnotationCRIUPodName:       m.Pod,
		AnnotationCRIUPodNamespace:  m.Namespace,
		AnnotationCreated:           created.Format(time.RFC3339),
	}).(v1.ImageIndex), nil
}

// Push writes the index to ref and returns the reference by digest.
func Push(ctx context.Context, ref name.Reference, idx v1.ImageIndex, opts ...remote.Option) (name.Digest, error) {
	opts = append([]remote.Option{remote.WithContext(ctx)}, opts...)
	if err := remote.WriteIndex(ref, idx, opts...); err != nil {
		return name.Digest{}, fmt.Errorf("pushing checkpoint image %s: %w", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		return name.Digest{}, err
	}
	return ref.Context().Digest(d.String()), nil
}

// Pulled is a checkpoint image read back from a registry.
type Pulled struct {
	Metadata
	Digest v1.Hash
	image  v1.Image
}

// Archive streams the checkpoint archive (the layer, uncompressed).
func (p *Pulled) Archive() (io.ReadCloser, error) {
	layers, err := p.image.Layers()
	if err != nil {
		return nil, err
	}
	if len(layers) != 1 {
		return nil, fmt.Errorf("checkpoint image has %d layers, want 1", len(layers))
	}
	return layers[0].Uncompressed()
}

// Pull reads the checkpoint image at ref (an index or a single manifest).
// It returns ErrNotCheckpoint for any other image.
func Pull(ctx context.Context, ref name.Reference, opts ...remote.Option) (*Pulled, error) {
	opts = append([]remote.Option{remote.WithContext(ctx)}, opts...)
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("pulling %s: %w", ref, err)
	}
	p := &Pulled{Digest: desc.Digest}
	indexAnn := map[string]string{}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, err
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, err
		}
		if len(im.Manifests) == 0 {
			return nil, fmt.Errorf("%s: empty image index", ref)
		}
		indexAnn = im.Annotations
		if p.image, err = idx.Image(im.Manifests[0].Digest); err != nil {
			return nil, err
		}
	} else if p.image, err = desc.Image(); err != nil {
		return nil, err
	}
	m, err := p.image.Manifest()
	if err != nil {
		return nil, err
	}
	p.Container = m.Annotations[AnnotationCRIOCheckpointName]
	if p.Container == "" {
		p.Container = indexAnn[AnnotationCRIUContainerName]
	}
	if p.Container == "" {
		return nil, fmt.Errorf("%s: %w", ref, ErrNotCheckpoint)
	}
	p.BaseImage, p.Runtime = indexAnn[AnnotationCRIUImageName], indexAnn[AnnotationCRIURuntimeName]
	p.Pod, p.Namespace = indexAnn[AnnotationCRIUPodName], indexAnn[AnnotationCRIUPodNamespace]
	if t, err := time.Parse(time.RFC3339, m.Annotations[AnnotationCreated]); err == nil {
		p.Created = t
	}
	return p, nil
}

// BytesOpener is an opener over an in-memory archive, for small archives
// and tests.
func BytesOpener(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}
