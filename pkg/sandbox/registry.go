package sandbox

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// persistentManifests keeps the manifests pushed to the sandbox registry
// on disk, so that they outlive a sandbox restart as its blobs do (the
// registry, go-containerregistry's, holds manifests in memory only): a
// restored pod whose image a previous run pushed can still pull it. Every
// manifest PUT that the registry accepted is written to dir, and
// replayed into a new registry by restoreManifests, in the order they
// were pushed.
type persistentManifests struct {
	next http.Handler
	dir  string

	mu  sync.Mutex
	seq int
}

type savedManifest struct {
	Seq         int    `json:"seq"`
	Path        string `json:"path"`
	ContentType string `json:"contentType"`
	Body        []byte `json:"body"`
}

// maxManifest bounds a manifest kept (the registry's own limit is larger;
// checkpoint images' manifests are a few KiB).
const maxManifest = 4 << 20

func (p *persistentManifests) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodDelete && strings.Contains(r.URL.Path, "/manifests/sha256:") {
		p.deleteManifest(w, r)
		return
	}
	if r.Method != http.MethodPut || !strings.Contains(r.URL.Path, "/manifests/") {
		p.next.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxManifest+1))
	if err != nil || len(body) > maxManifest {
		http.Error(w, "manifest too large or unreadable", http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	rec := httptest.NewRecorder()
	p.next.ServeHTTP(rec, r)
	if rec.Code/100 == 2 {
		if err := p.save(r.URL.Path, r.Header.Get("Content-Type"), body); err != nil {
			http.Error(w, "sandbox registry: keeping the manifest: "+err.Error(), http.StatusInternalServerError)
			return
		}
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func (p *persistentManifests) save(path, contentType string, body []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seq++
	b, err := json.Marshal(savedManifest{Seq: p.seq, Path: path, ContentType: contentType, Body: body})
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(path))
	name := filepath.Join(p.dir, hex.EncodeToString(sum[:12])+".json")
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, name) // a tag pushed again keeps its last manifest
}

// restoreManifests replays the manifests kept in dir into the registry,
// in the order they were pushed (an index after the manifests it lists).
func (p *persistentManifests) restoreManifests() error {
	files, err := filepath.Glob(filepath.Join(p.dir, "*.json"))
	if err != nil {
		return err
	}
	var saved []savedManifest
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var m savedManifest
		if err := json.Unmarshal(b, &m); err != nil {
			return fmt.Errorf("sandbox registry: %s: %w", f, err)
		}
		saved = append(saved, m)
	}
	sort.Slice(saved, func(i, j int) bool { return saved[i].Seq < saved[j].Seq })
	for _, m := range saved {
		req := httptest.NewRequest(http.MethodPut, m.Path, bytes.NewReader(m.Body))
		req.Header.Set("Content-Type", m.ContentType)
		rec := httptest.NewRecorder()
		p.next.ServeHTTP(rec, req)
		if rec.Code/100 != 2 {
			return fmt.Errorf("sandbox registry: restoring %s: %d %s", m.Path, rec.Code, strings.TrimSpace(rec.Body.String()))
		}
		p.seq = max(p.seq, m.Seq)
	}
	return nil
}

// deleteManifest deletes a manifest by digest as the distribution spec's
// reference implementation (distribution/distribution) does: the manifest
// and every tag of the repository that points at it
// (go-containerregistry's registry deletes only the one key), kept
// deleted across restarts.
func (p *persistentManifests) deleteManifest(w http.ResponseWriter, r *http.Request) {
	dir, digest, _ := strings.Cut(r.URL.Path, "/manifests/")
	p.mu.Lock()
	defer p.mu.Unlock()
	files, err := filepath.Glob(filepath.Join(p.dir, "*.json"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	rec := httptest.NewRecorder()
	p.next.ServeHTTP(rec, r)
	if rec.Code/100 == 2 {
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			var m savedManifest
			if json.Unmarshal(b, &m) != nil || !strings.HasPrefix(m.Path, dir+"/manifests/") {
				continue
			}
			if sum := sha256.Sum256(m.Body); "sha256:"+hex.EncodeToString(sum[:]) != digest {
				continue
			}
			if m.Path != r.URL.Path { // a tag pointing at it
				p.next.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodDelete, m.Path, nil))
			}
			_ = os.Remove(f)
		}
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}
