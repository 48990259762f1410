package regtest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
)

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	err := Main(ctx, args, &out, &errb)
	t.Logf("$ anchorchat regtest %s\n%s", strings.Join(args, " "), out.String())
	if err != nil {
		t.Logf("stderr:\n%s", errb.String())
	}
	return out.String(), err
}

func needBinaries(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts btcd and LND")
	}
	if _, ok := CachedBinaries(); ok {
		return
	}
	if d, ok := t.Deadline(); ok && time.Until(d) < 20*time.Minute {
		t.Fatalf("regtest: btcd/lnd are not built yet (cache %s) and building lnd takes ~9 min on 2 cores; "+
			"run `go test -timeout 60m` (or `anchorchat regtest build` first)", mustCacheDir())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	if _, err := EnsureBinaries(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

func TestCLIHelp(t *testing.T) {
	for _, cmd := range []string{"up", "down", "status", "mine", "fund", "build"} {
		out, err := runCLI(t, cmd, "--help")
		if err != nil || !strings.Contains(out, "usage: anchorchat regtest "+cmd) || !strings.Contains(out, "-dir") {
			t.Fatalf("%s --help: err %v out %q", cmd, err, out)
		}
	}
	if _, err := runCLI(t, "bogus"); err == nil {
		t.Fatal("unknown command accepted")
	}
	if out, err := runCLI(t, "mine", "--dir", t.TempDir(), "3"); err == nil || !strings.Contains(err.Error(), "no network") {
		t.Fatalf("mine without network: %v %q", err, out)
	}
}

// TestCLIUpTwiceAndDownAfterCrash: a second up on a live network refuses
// clearly; mine and fund work; after an LND is SIGKILLed, status says so and
// down stops the rest.
func TestCLIUpTwiceAndDownAfterCrash(t *testing.T) {
	needBinaries(t)
	dir := filepath.Join(t.TempDir(), "net")
	out, err := runCLI(t, "up", "--dir", dir, "--detach", "--lnd", "2", "--no-channels", "--fund", "1")
	if err != nil {
		t.Fatal(err)
	}
	st, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = StopState(context.Background(), st) })
	for _, want := range []string{"lncli", "--macaroonpath=" + st.LNDs[0].MacaroonPath, "--tlscertpath=", StatePath(dir), st.Btcd.RPCAddr} {
		if !strings.Contains(out, want) {
			t.Fatalf("up output lacks %q", want)
		}
	}

	_, err = runCLI(t, "up", "--dir", dir, "--detach")
	if !errors.Is(err, ErrRunning) || !strings.Contains(err.Error(), "already running") || !strings.Contains(err.Error(), "regtest down") {
		t.Fatalf("second up: %v", err)
	}
	if !st.AnyAlive() {
		t.Fatal("second up harmed the running network")
	}

	out, err = runCLI(t, "mine", "--dir", dir, "3")
	if err != nil || !strings.Contains(out, "height 444") {
		t.Fatalf("mine: %v %q", err, out)
	}
	k, _ := btcec.NewPrivateKey()
	addr, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(k.PubKey().SerializeCompressed()), Params)
	if out, err = runCLI(t, "fund", "--dir", dir, addr.EncodeAddress(), "1.5"); err != nil || !strings.Contains(out, "sent 1.50000000 BTC") {
		t.Fatalf("fund: %v %q", err, out)
	}

	if err := syscall.Kill(st.LNDs[0].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !waitGone(context.Background(), st.LNDs[0].PID, st.LNDs[0].Binary, 10*time.Second) {
		t.Fatal("killed lnd still alive")
	}
	if out, err = runCLI(t, "status", "--dir", dir); err != nil || !strings.Contains(out, "NOT RUNNING") {
		t.Fatalf("status after crash: %v %q", err, out)
	}
	if _, err = runCLI(t, "down", "--dir", dir); err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Processes() {
		if p.Alive {
			t.Fatalf("%s (pid %d) still running after down", p.Name, p.PID)
		}
	}
	if _, err := os.Stat(StatePath(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state file left: %v", err)
	}
	if _, err := os.Stat(st.Btcd.LogPath); err != nil {
		t.Fatalf("down without --wipe removed data: %v", err)
	}
}

// TestCLIStaleState: a state file whose processes all died is detected by
// status, cleaned by the next up, and down --wipe removes everything.
func TestCLIStaleState(t *testing.T) {
	needBinaries(t)
	dir := filepath.Join(t.TempDir(), "net")
	if _, err := runCLI(t, "up", "--dir", dir, "--detach", "--lnd", "1", "--fund", "1"); err != nil {
		t.Fatal(err)
	}
	old, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = StopState(context.Background(), old) })
	for _, p := range old.Processes() {
		_ = syscall.Kill(p.PID, syscall.SIGKILL)
		waitGone(context.Background(), p.PID, p.Binary, 10*time.Second)
	}
	if old.AnyAlive() {
		t.Fatal("processes survived SIGKILL")
	}
	if out, err := runCLI(t, "status", "--dir", dir); err != nil || strings.Count(out, "NOT RUNNING") != 2 {
		t.Fatalf("status of dead run: %v %q", err, out)
	}
	if _, err := runCLI(t, "mine", "--dir", dir, "1"); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("mine on dead network: %v", err)
	}
	if _, err := runCLI(t, "up", "--dir", dir, "--detach", "--lnd", "1", "--fund", "1"); err != nil {
		t.Fatalf("up over a stale state file: %v", err)
	}
	st, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = StopState(context.Background(), st) })
	if st.Btcd.PID == old.Btcd.PID || !st.AnyAlive() {
		t.Fatalf("new network not running: %+v", st.Processes())
	}
	if _, err := runCLI(t, "down", "--dir", dir, "--wipe"); err != nil {
		t.Fatal(err)
	}
	if st.AnyAlive() {
		t.Fatal("processes left after down")
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dir left after --wipe: %v", err)
	}
}

// TestWipeKeepsOthersFiles: --wipe removes what up made, not a regtest
// node's own data that shares the default directory.
func TestWipeKeepsOthersFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "regtest")
	for _, d := range []string{"btcd/data", "wallet", "nodes/node-0", "lnd-0", "lnd-1"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(StatePath(dir), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"btcd/btcd.log", "nodes/node-0/identity.json", "identity.json", "events.db"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if help, _ := runCLI(t, "down", "--help"); strings.Contains(help, "delete the network directory") || !strings.Contains(help, "other files") {
		t.Errorf("down --help does not say what --wipe keeps:\n%s", help)
	}
	if out, err := runCLI(t, "down", "--dir", dir, "--wipe"); err != nil || !strings.Contains(out, "other files there are kept") {
		t.Fatalf("down --wipe with a node's files there: %v %q", err, out)
	}
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range left {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"events.db", "identity.json"}) {
		t.Fatalf("left after --wipe: %v, want only the node's own events.db and identity.json", names)
	}
	for _, f := range names {
		os.Remove(filepath.Join(dir, f))
	}
	if err := os.MkdirAll(filepath.Join(dir, "nodes"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "down", "--dir", dir, "--wipe"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("an emptied dir is left after --wipe: %v", err)
	}
}

// TestCLIUsageErrorsGoToStderr: --help prints to stdout (and succeeds); a
// bad flag or a wrong number of arguments prints the message and the usage
// to stderr, not into the output a script captures.
func TestCLIUsageErrorsGoToStderr(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		ok   bool
		want string
	}{
		{[]string{"up", "--help"}, true, "usage: anchorchat regtest up"},
		{[]string{"up", "--bogus"}, false, "flag provided but not defined: -bogus"},
		{[]string{"mine", "--dir", dir}, false, "usage: anchorchat regtest mine"},
		{[]string{"fund", "--dir", dir, "bcrt1q"}, false, "usage: anchorchat regtest fund"},
		{[]string{"status", "--dir"}, false, "flag needs an argument"},
		{nil, false, "usage: anchorchat regtest <command>"},
		{[]string{"help"}, true, "usage: anchorchat regtest <command>"},
		{[]string{"bogus"}, false, "usage: anchorchat regtest <command>"},
	} {
		var out, errb bytes.Buffer
		err := Main(context.Background(), c.args, &out, &errb)
		if (err == nil) != c.ok {
			t.Errorf("%v: err %v", c.args, err)
		}
		got, other := &out, &errb
		if !c.ok {
			got, other = &errb, &out
		}
		if !strings.Contains(got.String(), c.want) || other.Len() != 0 {
			t.Errorf("%v: want %q on std%s only; stdout %q, stderr %q", c.args, c.want, map[bool]string{true: "out", false: "err"}[c.ok], out.String(), errb.String())
		}
	}
}

// TestCLIUpRefusesBadAmounts: amounts that cannot make a network are
// refused before anything starts (--fund 0 and --channel-sats 0 silently
// meant the defaults; a negative --lnd meant none; the others failed only
// after btcd and LND had started).
func TestCLIUpRefusesBadAmounts(t *testing.T) {
	// Nothing is cached and nothing can be fetched: an up that gets as far
	// as the binaries fails at once, saying "build".
	t.Setenv("ANCHORCHAT_CACHE", t.TempDir())
	t.Setenv("GOPROXY", "off")
	t.Setenv("GOMODCACHE", t.TempDir())
	dir := t.TempDir()
	for _, c := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--fund", "0"}, "--fund"},
		{[]string{"--fund", "-1"}, "--fund"},
		{[]string{"--channel-sats", "0"}, "--channel-sats"},
		{[]string{"--channel-sats", "-5"}, "--channel-sats"},
		{[]string{"--channel-sats", "20000000"}, "--channel-sats"}, // above LND's 16,777,215 without wumbo
		{[]string{"--fund", "0.01", "--channel-sats", "1000000"}, "--fund"},
		{[]string{"--lnd", "-1"}, "--lnd"},
	} {
		_, err := runCLI(t, append([]string{"up", "--dir", dir}, c.flags...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "build") {
			t.Errorf("up %v: %v; want it refused, naming %s", c.flags, err, c.want)
		}
	}
	// Without channels, a small fund is fine: the up gets to the binaries.
	if _, err := runCLI(t, "up", "--dir", dir, "--fund", "0.01", "--no-channels"); err == nil || !strings.Contains(err.Error(), "build") {
		t.Errorf("up --fund 0.01 --no-channels: %v; want it past the checks", err)
	}
}

// TestCLIUpStopsAtHangup: a foreground up whose terminal closes (SIGHUP)
// stops what it started, as at Ctrl-C (SIGHUP killed it outright, leaving
// btcd and LND, in sessions of their own, running). Under nohup (SIGHUP
// ignored) it keeps going.
func TestCLIUpStopsAtHangup(t *testing.T) {
	fakeCache(t)
	old := upTimeout
	t.Cleanup(func() { upTimeout = old })

	t.Run("hangup", func(t *testing.T) {
		if signal.Ignored(syscall.SIGHUP) {
			t.Skip("the tests run with SIGHUP ignored (nohup)")
		}
		upTimeout = time.Minute // a backstop
		st, err := upUntilBtcd(t, func() {
			if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
		})
		if err == nil || !errors.Is(err, context.Canceled) {
			t.Errorf("up at SIGHUP: %v, want it stopped (context canceled)", err)
		}
		if pidAlive(st.Btcd.PID, st.Btcd.Binary) {
			_ = syscall.Kill(st.Btcd.PID, syscall.SIGKILL)
			t.Fatalf("btcd (pid %d) still running after up stopped", st.Btcd.PID)
		}
	})
	t.Run("nohup", func(t *testing.T) {
		signal.Ignore(syscall.SIGHUP)
		defer signal.Reset(syscall.SIGHUP)
		upTimeout = 3 * time.Second // the fake btcd never answers: up ends here
		_, err := upUntilBtcd(t, func() {
			if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
		})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("up under nohup, at SIGHUP: %v; want it to go on (to its deadline)", err)
		}
	})
}

// fakeCache makes a cache of fake btcd, btcctl, lnd and lncli that hang.
func fakeCache(t *testing.T) {
	t.Helper()
	t.Setenv("ANCHORCHAT_CACHE", t.TempDir())
	b, err := binaryPaths()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{b.Btcd, b.Btcctl, b.Lnd, b.Lncli} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(exe, p); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(fakeEnv, "hang")
}

// upUntilBtcd runs `up --lnd 0` in a temp dir, calls then() once btcd is in
// the state file, and returns that state and up's error.
func upUntilBtcd(t *testing.T, then func()) (*State, error) {
	t.Helper()
	dir := t.TempDir()
	done := make(chan error, 1)
	go func() {
		done <- Main(context.Background(), []string{"up", "--dir", dir, "--lnd", "0"}, io.Discard, io.Discard)
	}()
	var st *State
	for st == nil || st.Btcd.PID == 0 {
		select {
		case err := <-done:
			t.Fatalf("up ended before btcd started: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		st, _ = ReadState(dir)
	}
	then()
	return st, <-done
}

// TestCLIRefusesStrayArguments: `down DIR` (the directory given without
// --dir) stopped and removed the network in the default directory, and
// ignored DIR; a flag after mine's N was an unexplained argument count.
func TestCLIRefusesStrayArguments(t *testing.T) {
	def := t.TempDir()
	t.Setenv("ANCHORCHAT_REGTEST_DIR", def)
	if err := writeState(&State{Version: 1, Dir: def}); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	for _, cmd := range []string{"down", "status", "build"} {
		if _, err := runCLI(t, cmd, other); err == nil || !strings.Contains(err.Error(), "--dir") {
			t.Errorf("%s %s: %v; want it refused, pointing at --dir", cmd, other, err)
		}
	}
	if _, err := os.Stat(StatePath(def)); err != nil {
		t.Fatalf("down %s acted on the default directory %s: %v", other, def, err)
	}
	if _, err := runCLI(t, "mine", "3", "--dir", other); err == nil || !strings.Contains(err.Error(), "before") {
		t.Errorf("mine 3 --dir: %v; want it told that flags go before N", err)
	}
	if _, err := runCLI(t, "fund", "bcrt1qxyz", "1", "--no-mine"); err == nil || !strings.Contains(err.Error(), "before") {
		t.Errorf("fund ADDR AMOUNT --no-mine: %v; want it told that flags go first", err)
	}
}
