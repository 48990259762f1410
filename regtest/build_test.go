package regtest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestEnsureBuiltOnceUnderConcurrency: concurrent builders build once (lock
// file), the result appears atomically, a failed build leaves nothing, and a
// cached build is reused.
func TestEnsureBuiltOnceUnderConcurrency(t *testing.T) {
	t.Setenv("ANCHORCHAT_CACHE", t.TempDir())
	ctx := context.Background()
	var calls atomic.Int32
	build := func(ctx context.Context, _ *slog.Logger, out string) error {
		calls.Add(1)
		time.Sleep(300 * time.Millisecond)
		for _, f := range []string{"a", "b"} {
			if err := os.WriteFile(filepath.Join(out, f), []byte("#!/bin/sh\n"), 0o755); err != nil {
				return err
			}
		}
		return nil
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = ensureBuilt(ctx, discardLog(), "fake", "v1", []string{"a", "b"}, build)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("built %d times, want 1", n)
	}
	dir, _ := binDir("fake", "v1")
	for _, f := range []string{"a", "b"} {
		if !isExecutable(filepath.Join(dir, f)) {
			t.Fatalf("%s missing", f)
		}
	}
	if err := ensureBuilt(ctx, discardLog(), "fake", "v1", []string{"a", "b"}, build); err != nil || calls.Load() != 1 {
		t.Fatalf("cached build not reused: %v, %d calls", err, calls.Load())
	}

	// A failing build leaves no directory and no temp dirs behind.
	fail := func(context.Context, *slog.Logger, string) error { return errors.New("boom") }
	if err := ensureBuilt(ctx, discardLog(), "bad", "v1", []string{"x"}, fail); err == nil {
		t.Fatal("failed build reported success")
	}
	bad, _ := binDir("bad", "v1")
	if _, err := os.Stat(bad); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("failed build left %s", bad)
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(bad), ".bad-v1.tmp-*"))
	if len(left) != 0 {
		t.Fatalf("temp dirs left: %v", left)
	}
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestBuildLndSaysWhyTheDownloadFailed: when the module proxy can't serve
// lnd, the error carries go's reason (go mod download -json reports it in
// its JSON on stdout and exits 1, with nothing on stderr).
func TestBuildLndSaysWhyTheDownloadFailed(t *testing.T) {
	t.Setenv("GOPROXY", "off")
	t.Setenv("GOMODCACHE", t.TempDir()) // lnd is not in this one
	err := buildLnd(context.Background(), discardLog(), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "GOPROXY=off") {
		t.Fatalf("buildLnd with the proxy off: %v; want go's reason (module lookup disabled by GOPROXY=off)", err)
	}
}

// TestEnsureBuiltRemovesAnInterruptedBuild: a build killed before its
// deferred cleanup (SIGKILL, an OOM kill, a second Ctrl-C) leaves its temp
// directory, often hundreds of MB; the next builder, which holds the lock
// so no other build of that version runs, removes it.
func TestEnsureBuiltRemovesAnInterruptedBuild(t *testing.T) {
	t.Setenv("ANCHORCHAT_CACHE", t.TempDir())
	dir, _ := binDir("fake", "v1")
	stale := filepath.Join(filepath.Dir(dir), ".fake-v1.tmp-123")
	if err := os.MkdirAll(filepath.Join(stale, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stale, "a"), []byte("half a binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(filepath.Dir(dir), ".fake-v2.tmp-456") // another version's: not ours to judge
	if err := os.MkdirAll(other, 0o755); err != nil {
		t.Fatal(err)
	}
	build := func(_ context.Context, _ *slog.Logger, out string) error {
		return os.WriteFile(filepath.Join(out, "a"), []byte("#!/bin/sh\n"), 0o755)
	}
	if err := ensureBuilt(context.Background(), discardLog(), "fake", "v1", []string{"a"}, build); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(dir), ".fake-v1.tmp-*")); len(left) != 0 {
		t.Fatalf("interrupted build's temp dir left: %v", left)
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatalf("another version's temp dir removed: %v", err)
	}
}
