package kubelet

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestProjectBinaryMapping(t *testing.T) {
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "example-consumer"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	rt := &Runtime{BinDir: bin, ProjectImages: []string{"ghcr.io/ms2m/ms2m"}, Registry: "127.0.0.1:5000"}
	for _, tc := range []struct {
		image   string
		argv    []string
		want    string // binary, "" for processless
		project bool
		err     string
	}{
		{"ghcr.io/ms2m/ms2m:v0.1.0", []string{"/ms2m/example-consumer", "--x"}, filepath.Join(bin, "example-consumer"), true, ""},
		{"ghcr.io/ms2m/ms2m@sha256:" + strings.Repeat("a", 64), []string{"/ms2m/example-consumer"}, filepath.Join(bin, "example-consumer"), true, ""},
		{"ghcr.io/ms2m/ms2m:v0.1.0", nil, "", true, "set the container's command"},
		{"ghcr.io/ms2m/ms2m:v0.1.0", []string{"/ms2m/nope"}, "", true, "make build"},
		{"registry.k8s.io/pause:3.10", nil, "", false, ""},
		{"nginx", []string{"nginx"}, "", false, ""},
	} {
		got, project, err := rt.projectBinary(tc.image, tc.argv)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s %v: err = %v, want %q", tc.image, tc.argv, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want || project != tc.project {
			t.Errorf("%s %v = %q, %v, %v; want %q, %v", tc.image, tc.argv, got, project, err, tc.want, tc.project)
		}
	}
	if _, ok := rt.fromRegistry("127.0.0.1:5000/checkpoints/x@sha256:" + strings.Repeat("b", 64)); !ok {
		t.Error("an image in the sandbox registry is not considered for restore")
	}
	if _, ok := rt.fromRegistry("ghcr.io/ms2m/ms2m:v0.1.0"); ok {
		t.Error("an image elsewhere is pulled from the sandbox registry")
	}
}

func TestBackoffIsBounded(t *testing.T) {
	prev := backoff(0)
	for i := int32(1); i < 20; i++ {
		b := backoff(i)
		if b < prev || b > restartBackoffMax {
			t.Fatalf("backoff(%d) = %s after %s (max %s)", i, b, prev, restartBackoffMax)
		}
		prev = b
	}
}
