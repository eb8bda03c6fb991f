package simcriu

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/ms2m/ms2m/internal/expect"
)

func TestArchiveRoundTrip(t *testing.T) {
	in := &Archive{
		Config: ContainerConfig{ID: "c1", Name: "app", RootfsImageName: "ghcr.io/ms2m/ms2m:v0.1.0", Runtime: RuntimeName,
			CheckpointedTime: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)},
		Spec:         Spec{OCIVersion: "1.0.2", Process: Process{Args: []string{"/ms2m/example-consumer", "--port=8080"}, Env: []string{"A=b"}}},
		Memory:       []byte(`{"digest":"abc"}`),
		DumpDuration: 1500 * time.Microsecond,
	}
	var buf bytes.Buffer
	if err := in.Write(&buf); err != nil {
		t.Fatal(err)
	}
	out, err := ReadArchive(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if out.Config != in.Config || !bytes.Equal(out.Memory, in.Memory) || out.DumpDuration != in.DumpDuration ||
		out.Spec.Process.Args[1] != "--port=8080" || out.Spec.Process.Env[0] != "A=b" {
		t.Fatalf("round trip changed the archive:\n in %+v\nout %+v", in, out)
	}
}

func TestReadArchiveRejectsOtherTars(t *testing.T) {
	var buf bytes.Buffer
	a := &Archive{}
	if err := a.Write(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadArchive(bytes.NewReader(buf.Bytes()[:100])); err == nil {
		t.Fatal("a truncated archive was accepted")
	}
	if _, err := ReadArchive(bytes.NewReader(make([]byte, 1024))); err == nil {
		t.Fatal("an empty tar was accepted as a checkpoint")
	}
}

func TestHookDumpsWhatTheAppServes(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "hook.sock")
	t.Setenv(EnvHook, sock)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ServeHook(ctx, func() ([]byte, error) { return []byte("state-42"), nil }) }()
	var got []byte
	expect.Eventually(t, "the app's memory state through the hook", func() error {
		var err error
		got, err = Dump(ctx, sock)
		return err
	})
	if string(got) != "state-42" {
		t.Fatalf("dump = %q, want state-42", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("ServeHook after cancel: %v", err)
	}
}

func TestDumpOfProcessWithoutHook(t *testing.T) {
	_, err := Dump(context.Background(), filepath.Join(t.TempDir(), "absent.sock"))
	if !errors.Is(err, ErrNoHook) {
		t.Fatalf("err = %v, want ErrNoHook", err)
	}
}

func TestRestoredState(t *testing.T) {
	t.Setenv(EnvRestore, "")
	if _, ok, err := RestoredState(); ok || err != nil {
		t.Fatalf("fresh start reported as restore: ok=%v err=%v", ok, err)
	}
	t.Setenv(EnvRestore, filepath.Join(t.TempDir(), "missing.img"))
	if _, _, err := RestoredState(); err == nil {
		t.Fatal("a missing memory image was not reported")
	}
}
