package checkpoint

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// rawLayer is the archive as an uncompressed OCI layer
// (application/vnd.oci.image.layer.v1.tar): the blob is the tar itself,
// so its digest is also its diff ID. A checkpoint is mostly memory pages,
// which gzip shrinks little and slowly (about 20 MiB/s on one core of the
// benchmark machine, where the registry takes the raw tar at hundreds): see
// docs/benchmarks.md, "Checkpoint size".
type rawLayer struct {
	open func() (io.ReadCloser, error)

	once sync.Once
	hash v1.Hash
	size int64
	err  error
}

func (l *rawLayer) calc() {
	l.once.Do(func() {
		rc, err := l.open()
		if err != nil {
			l.err = err
			return
		}
		defer func() { _ = rc.Close() }()
		h := sha256.New()
		if l.size, l.err = io.Copy(h, rc); l.err == nil {
			l.hash = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
		}
	})
}

func (l *rawLayer) Digest() (v1.Hash, error)             { l.calc(); return l.hash, l.err }
func (l *rawLayer) DiffID() (v1.Hash, error)             { return l.Digest() }
func (l *rawLayer) Size() (int64, error)                 { l.calc(); return l.size, l.err }
func (l *rawLayer) Compressed() (io.ReadCloser, error)   { return l.open() }
func (l *rawLayer) Uncompressed() (io.ReadCloser, error) { return l.open() }
func (l *rawLayer) MediaType() (types.MediaType, error)  { return types.OCIUncompressedLayer, nil }
