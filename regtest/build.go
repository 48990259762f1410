package regtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/mod/modfile"
)

// Pinned versions of the binaries the harness runs.
const (
	BtcdVersion = "v0.25.0"
	LndVersion  = "v0.20.0-beta"
	// LndBuildTags are the build tags of lnd and lncli (the RPC
	// sub-servers the harness and the node use).
	LndBuildTags = "signrpc walletrpc chainrpc invoicesrpc routerrpc peersrpc"

	btcdModule = "github.com/btcsuite/btcd"
	lndModule  = "github.com/lightningnetwork/lnd"
)

// Binaries are absolute paths of the built executables.
type Binaries struct {
	Btcd, Btcctl, Lnd, Lncli string
}

// CacheDir is $ANCHORCHAT_CACHE, or the user cache directory's "anchorchat".
func CacheDir() (string, error) {
	if d := os.Getenv("ANCHORCHAT_CACHE"); d != "" {
		return filepath.Abs(d)
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("regtest: cache dir: %w (set ANCHORCHAT_CACHE)", err)
	}
	return filepath.Join(d, "anchorchat"), nil
}

// binDir is CacheDir()/bin/<name>-<version>.
func binDir(name, version string) (string, error) {
	root, err := CacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "bin", name+"-"+version), nil
}

// CachedBinaries returns the binaries if all are already built.
func CachedBinaries() (Binaries, bool) {
	b, err := binaryPaths()
	if err != nil {
		return b, false
	}
	for _, p := range []string{b.Btcd, b.Btcctl, b.Lnd, b.Lncli} {
		if !isExecutable(p) {
			return b, false
		}
	}
	return b, true
}

func binaryPaths() (Binaries, error) {
	bd, err := binDir("btcd", BtcdVersion)
	if err != nil {
		return Binaries{}, err
	}
	ld, err := binDir("lnd", LndVersion)
	if err != nil {
		return Binaries{}, err
	}
	return Binaries{
		Btcd: filepath.Join(bd, "btcd"), Btcctl: filepath.Join(bd, "btcctl"),
		Lnd: filepath.Join(ld, "lnd"), Lncli: filepath.Join(ld, "lncli"),
	}, nil
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}

// EnsureBinaries builds whatever of btcd/btcctl and lnd/lncli is not cached
// yet and returns their paths. Builds go to a temporary directory renamed into
// place when complete, under a lock file, so concurrent callers (tests in
// several packages) build once and never see half-written binaries. A cold
// lnd build takes about 9 minutes on 2 cores.
func EnsureBinaries(ctx context.Context, log *slog.Logger) (Binaries, error) {
	if log == nil {
		log = slog.Default()
	}
	b, err := binaryPaths()
	if err != nil {
		return b, err
	}
	if err := ensureBuilt(ctx, log, "btcd", BtcdVersion, []string{"btcd", "btcctl"}, buildBtcd); err != nil {
		return b, err
	}
	if err := ensureBuilt(ctx, log, "lnd", LndVersion, []string{"lnd", "lncli"}, buildLnd); err != nil {
		return b, err
	}
	return b, nil
}

type builder func(ctx context.Context, log *slog.Logger, out string) error

func ensureBuilt(ctx context.Context, log *slog.Logger, name, version string, files []string, build builder) error {
	dir, err := binDir(name, version)
	if err != nil {
		return err
	}
	have := func() bool {
		for _, f := range files {
			if !isExecutable(filepath.Join(dir, f)) {
				return false
			}
		}
		return true
	}
	if have() {
		return nil
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("regtest: %w", err)
	}
	unlock, err := lockFile(ctx, log, filepath.Join(parent, "."+name+"-"+version+".lock"))
	if err != nil {
		return err
	}
	defer unlock()
	if have() { // built by another process while we waited
		return nil
	}
	// Temp dirs of this version left by a builder killed before its
	// deferred cleanup: no other build of it runs while we hold the lock.
	if stale, _ := filepath.Glob(filepath.Join(parent, "."+name+"-"+version+".tmp-*")); len(stale) > 0 {
		log.Info("removing an interrupted build", "dirs", stale)
		for _, d := range stale {
			_ = os.RemoveAll(d)
		}
	}
	tmp, err := os.MkdirTemp(parent, "."+name+"-"+version+".tmp-")
	if err != nil {
		return fmt.Errorf("regtest: %w", err)
	}
	defer os.RemoveAll(tmp)
	start := time.Now()
	log.Info("building "+name, "version", version, "into", dir)
	if err := build(ctx, log, tmp); err != nil {
		return fmt.Errorf("regtest: build %s %s: %w", name, version, err)
	}
	for _, f := range files {
		if !isExecutable(filepath.Join(tmp, f)) {
			return fmt.Errorf("regtest: build %s %s: %s missing after build", name, version, f)
		}
	}
	_ = os.RemoveAll(dir) // a partial leftover without all files
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("regtest: install %s: %w", name, err)
	}
	log.Info("built "+name, "version", version, "elapsed", time.Since(start).Round(time.Second))
	return nil
}

// lockFile takes an exclusive flock on path, polling so ctx can cancel.
func lockFile(ctx context.Context, log *slog.Logger, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("regtest: lock file: %w", err)
	}
	waiting := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("regtest: flock %s: %w", path, err)
		}
		if !waiting {
			log.Info("another process is building; waiting for it", "lock", path)
			waiting = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("regtest: waiting for build lock: %w", ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if isExecutable(p) {
		return p
	}
	return "go"
}

// goEnv is the environment for child go commands: no workspace, no
// inherited -mod flag from the caller's module.
func goEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GOFLAGS=") || strings.HasPrefix(kv, "GOWORK=") || strings.HasPrefix(kv, "GOBIN=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, append([]string{"GOWORK=off"}, extra...)...)
}

// runGo runs the go tool, logging progress every 30 s (elapsed and the
// number of packages compiled so far, from -v output), and returns its
// output tail in the error.
func runGo(ctx context.Context, log *slog.Logger, what, dir string, env []string, args ...string) error {
	cmd := exec.CommandContext(ctx, goTool(), args...)
	cmd.Dir = dir
	cmd.Env = env
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var (
		mu    sync.Mutex
		lines int
		tail  []string
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			mu.Lock()
			lines++
			tail = append(tail, sc.Text())
			if len(tail) > 40 {
				tail = tail[1:]
			}
			mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		pw.Close()
		return fmt.Errorf("start go: %w", err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait(); pw.Close() }()
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-waitErr:
			<-done
			if err != nil {
				mu.Lock()
				defer mu.Unlock()
				return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, strings.Join(tail, "\n"))
			}
			return nil
		case <-tick.C:
			mu.Lock()
			n := lines
			mu.Unlock()
			log.Info("still building "+what, "elapsed", time.Since(start).Round(time.Second), "packages", n)
		}
	}
}

func buildBtcd(ctx context.Context, log *slog.Logger, out string) error {
	log.Info("go install btcd and btcctl (about a minute)", "version", BtcdVersion)
	return runGo(ctx, log, "btcd", out, goEnv("GOBIN="+out, "GOFLAGS=-buildvcs=false"),
		"install", "-v", btcdModule+"@"+BtcdVersion, btcdModule+"/cmd/btcctl@"+BtcdVersion)
}

type modDownload struct {
	Dir, GoMod, Error string
}

// buildLnd builds lnd and lncli in a generated tools module that requires
// lnd and copies lnd's replace directives (lnd can't be `go install`ed
// because its go.mod has replace directives).
func buildLnd(ctx context.Context, log *slog.Logger, out string) error {
	src := filepath.Join(out, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(src)
	env := goEnv("GOFLAGS=-mod=mod -buildvcs=false")
	dl := exec.CommandContext(ctx, goTool(), "mod", "download", "-json", lndModule+"@"+LndVersion)
	dl.Dir, dl.Env = src, env
	var stderr bytes.Buffer
	dl.Stderr = &stderr
	js, err := dl.Output()
	// With -json, go reports a failed download (proxy unreachable, module
	// missing) in the JSON's Error on stdout and exits 1, stderr empty.
	var md modDownload
	jerr := json.Unmarshal(js, &md)
	switch {
	case jerr == nil && md.Error != "":
		return fmt.Errorf("go mod download lnd: %s", md.Error)
	case err != nil:
		return fmt.Errorf("go mod download lnd: %w: %s%s", err, stderr.String(), js)
	case jerr != nil:
		return fmt.Errorf("go mod download lnd: %w", jerr)
	}
	gomod, err := os.ReadFile(filepath.Join(md.Dir, "go.mod"))
	if err != nil {
		return fmt.Errorf("read lnd go.mod: %w", err)
	}
	lf, err := modfile.Parse("go.mod", gomod, nil)
	if err != nil {
		return fmt.Errorf("parse lnd go.mod: %w", err)
	}
	tf := &modfile.File{}
	if err := tf.AddModuleStmt("anchorchat.local/lndtools"); err != nil {
		return err
	}
	if lf.Go != nil {
		if err := tf.AddGoStmt(lf.Go.Version); err != nil {
			return err
		}
	}
	if err := tf.AddRequire(lndModule, LndVersion); err != nil {
		return err
	}
	for _, r := range lf.Replace {
		if modfile.IsDirectoryPath(r.New.Path) {
			log.Warn("skipping lnd's local replace directive", "old", r.Old.Path, "new", r.New.Path)
			continue
		}
		if err := tf.AddReplace(r.Old.Path, r.Old.Version, r.New.Path, r.New.Version); err != nil {
			return err
		}
	}
	tf.Cleanup()
	b, err := tf.Format()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), b, 0o644); err != nil {
		return err
	}
	if sum, err := os.ReadFile(filepath.Join(md.Dir, "go.sum")); err == nil {
		if err := os.WriteFile(filepath.Join(src, "go.sum"), sum, 0o644); err != nil {
			return err
		}
	}
	log.Info("go build lnd and lncli (about 9 minutes on 2 cores when nothing is cached)",
		"version", LndVersion, "tags", LndBuildTags, "replaces", len(lf.Replace))
	return runGo(ctx, log, "lnd", src, env, "build", "-v", "-tags="+LndBuildTags, "-o", out+string(filepath.Separator),
		lndModule+"/cmd/lnd", lndModule+"/cmd/lncli")
}
