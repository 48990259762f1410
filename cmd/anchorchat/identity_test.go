package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/chaincfg"
	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip19"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/internal/node"
	"github.com/anchorchat/anchorchat/internal/nostrclient"
	"github.com/anchorchat/anchorchat/wallet"
)

const testPass = "Tr1cky-Walrus-Juggles-47-Neon-Pianos"

// cli runs the anchorchat binary and returns stdout+stderr.
func cli(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func TestInitAndIDCommands(t *testing.T) {
	dir := t.TempDir()
	sk := nostr.GeneratePrivateKey()
	pk, _ := nostr.GetPublicKey(sk)
	npub, _ := nip19.EncodePublicKey(pk)
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte(sk+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"ANCHORCHAT_PASSPHRASE=" + testPass}
	base := []string{"--network", "regtest", "--datadir", dir}

	// Weak passphrases are refused with a reason, and nothing is written.
	for _, weak := range []string{"1234", "000000", "password", "short pass"} {
		out, err := cli(t, []string{"ANCHORCHAT_PASSPHRASE=" + weak}, append([]string{"init", "--scrypt-logn", "10"}, base...)...)
		if err == nil {
			t.Fatalf("init accepted passphrase %q:\n%s", weak, out)
		}
		if !strings.Contains(out, "passphrase") {
			t.Errorf("refusing %q gave no reason: %s", weak, out)
		}
		if _, err := os.Stat(filepath.Join(dir, "identity.json")); !os.IsNotExist(err) {
			t.Fatalf("a keystore was written for passphrase %q", weak)
		}
	}

	out, err := cli(t, env, append([]string{"init", "--scrypt-logn", "10", "--handle", "@Alice", "--key-file", keyFile}, base...)...)
	if err != nil || !strings.Contains(out, npub) || !strings.Contains(out, "handle:      alice") {
		t.Fatalf("init: %v\n%s", err, out)
	}
	ks := filepath.Join(dir, "identity.json")
	fi, err := os.Stat(ks)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("keystore: %v %v", err, fi.Mode())
	}
	before, _ := os.ReadFile(ks)
	if bytes.Contains(before, []byte(sk)) {
		t.Fatal("the keystore holds the secret in the clear")
	}

	out, err = cli(t, env, append([]string{"init", "--scrypt-logn", "10"}, base...)...)
	if err == nil || !strings.Contains(out, "refusing to overwrite") {
		t.Fatalf("second init: %v\n%s", err, out)
	}
	if after, _ := os.ReadFile(ks); !bytes.Equal(before, after) {
		t.Fatal("second init changed the keystore")
	}

	out, err = cli(t, nil, append([]string{"id", "show"}, base...)...)
	if err != nil || !strings.Contains(out, npub) || !strings.Contains(out, "alice") || !strings.Contains(out, identity.Fingerprint(pk)) {
		t.Fatalf("id show: %v\n%s", err, out)
	}
	out, err = cli(t, nil, append([]string{"id", "export"}, base...)...)
	if err != nil || !strings.HasPrefix(out, "ncryptsec1") || strings.Contains(out, "nsec1") && !strings.Contains(out, "ncryptsec1") {
		t.Fatalf("id export: %v\n%s", err, out)
	}
	if !bytes.Contains(before, []byte(strings.TrimSpace(out))) {
		t.Fatal("id export did not print the stored ncryptsec")
	}
	out, err = cli(t, env, append([]string{"id", "export", "--nsec"}, base...)...)
	if err == nil || !strings.Contains(out, "--i-understand-this-reveals-my-key") {
		t.Fatalf("id export --nsec without confirmation: %v\n%s", err, out)
	}
	nsec, _ := nip19.EncodePrivateKey(sk)
	out, err = cli(t, env, append([]string{"id", "export", "--nsec", "--i-understand-this-reveals-my-key"}, base...)...)
	if err != nil || !strings.Contains(out, nsec) || !strings.Contains(out, "WARNING") {
		t.Fatalf("id export --nsec: %v\n%s", err, out)
	}
	out, err = cli(t, []string{"ANCHORCHAT_PASSPHRASE=wrong passphrase entirely"}, append([]string{"id", "export", "--nsec", "--i-understand-this-reveals-my-key"}, base...)...)
	if err == nil || !strings.Contains(out, "wrong passphrase") || strings.Contains(out, nsec) {
		t.Fatalf("export with a wrong passphrase: %v\n%s", err, out)
	}

	newPass := filepath.Join(t.TempDir(), "newpass")
	_ = os.WriteFile(newPass, []byte("Another!Strong-Passphrase-93-Quokka\n"), 0o600)
	out, err = cli(t, env, append([]string{"id", "passwd", "--new-passphrase-file", newPass}, base...)...)
	if err != nil {
		t.Fatalf("id passwd: %v\n%s", err, out)
	}
	if _, err := cli(t, env, append([]string{"id", "export", "--nsec", "--i-understand-this-reveals-my-key"}, base...)...); err == nil {
		t.Fatal("the old passphrase still opens the keystore after passwd")
	}
	out, err = cli(t, []string{"ANCHORCHAT_PASSPHRASE=Another!Strong-Passphrase-93-Quokka"}, append([]string{"id", "export", "--nsec", "--i-understand-this-reveals-my-key"}, base...)...)
	if err != nil || !strings.Contains(out, nsec) {
		t.Fatalf("the new passphrase does not open the keystore: %v\n%s", err, out)
	}

	// passwd without --scrypt-logn raises a cheap keystore to the default...
	logN := func(dir string) uint8 {
		t.Helper()
		out, err := cli(t, nil, "id", "export", "--network", "regtest", "--datadir", dir)
		if err != nil {
			t.Fatalf("id export: %v\n%s", err, out)
		}
		n, err := identity.NcryptsecLogN(strings.TrimSpace(out))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := logN(dir); n != identity.DefaultLogN {
		t.Errorf("log_n after passwd from 10: %d, want the default %d", n, identity.DefaultLogN)
	}
	// ...and keeps a dearer one (it used to drop it to the default).
	dear := t.TempDir()
	dearEnv := []string{"ANCHORCHAT_PASSPHRASE=Another!Strong-Passphrase-93-Quokka"}
	if out, err := cli(t, dearEnv, "init", "--scrypt-logn", fmt.Sprint(identity.DefaultLogN+1), "--network", "regtest", "--datadir", dear); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	if out, err := cli(t, nil, "id", "passwd", "--new-passphrase-file", newPass, "--passphrase-file", newPass, "--network", "regtest", "--datadir", dear); err != nil {
		t.Fatalf("id passwd: %v\n%s", err, out)
	}
	if n := logN(dear); n != identity.DefaultLogN+1 {
		t.Errorf("log_n after passwd from %d: %d", identity.DefaultLogN+1, n)
	}
	// Below 16 only on regtest.
	out, err = cli(t, env, "init", "--scrypt-logn", "10", "--network", "mainnet", "--datadir", t.TempDir())
	if err == nil || !strings.Contains(out, "at least 16") {
		t.Fatalf("init --scrypt-logn 10 on mainnet: %v\n%s", err, out)
	}

	// A second data dir: id import from an nsec on stdin.
	dir2 := t.TempDir()
	cmd := exec.Command(binPath, "id", "import", "--key-file", "-", "--scrypt-logn", "10", "--network", "regtest", "--datadir", dir2)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(nsec + "\n")
	if b, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(b), npub) {
		t.Fatalf("id import: %v\n%s", err, b)
	}
}

// The node unlocks the identity, publishes profile, DM relay list and handle
// claim, serves NIP-05, and never logs a secret.
func TestNodeIdentityAndNoSecretsInLogs(t *testing.T) {
	dir := t.TempDir()
	sk := nostr.GeneratePrivateKey()
	pk, _ := nostr.GetPublicKey(sk)
	nsec, _ := nip19.EncodePrivateKey(sk)
	keyFile := filepath.Join(t.TempDir(), "key")
	_ = os.WriteFile(keyFile, []byte(nsec), 0o600)
	env := []string{"ANCHORCHAT_PASSPHRASE=" + testPass}
	initOut, err := cli(t, env, "init", "--scrypt-logn", "10", "--handle", "alice", "--key-file", keyFile, "--network", "regtest", "--datadir", dir)
	if err != nil {
		t.Fatalf("init: %v\n%s", err, initOut)
	}
	ncryptsec, _ := os.ReadFile(filepath.Join(dir, "identity.json"))
	var ksFile struct{ Ncryptsec string }
	_ = json.Unmarshal(ncryptsec, &ksFile)

	// A wrong passphrase stops the node with a clear error.
	out, err := cli(t, []string{"ANCHORCHAT_PASSPHRASE=not the right one at all"}, "node", "--network", "regtest", "--datadir", dir, "--listen", "127.0.0.1:0")
	if err == nil || !strings.Contains(out, "wrong passphrase") {
		t.Fatalf("node with a wrong passphrase: %v\n%s", err, out)
	}

	p := startProcEnv(t, dir, env, "--log.level", "debug")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := nostrclient.Dial(ctx, p.rt.RelayURL, nostrclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := r.Query(ctx, nostr.Filter{Authors: []string{pk}, Kinds: []int{0, 10050, identity.KindHandleClaim}})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[int]*nostr.Event{}
	for _, e := range got {
		kinds[e.Kind] = e
	}
	if kinds[0] == nil || kinds[10050] == nil || kinds[identity.KindHandleClaim] == nil {
		t.Fatalf("published kinds: %v", kinds)
	}
	if c, err := identity.ValidateClaim(kinds[identity.KindHandleClaim]); err != nil || c.Handle != "alice" {
		t.Fatalf("claim: %+v %v", c, err)
	}
	if kinds[10050].Tags.FindWithValue("relay", p.rt.RelayURL) == nil {
		t.Fatalf("kind 10050 does not name the node's relay: %v", kinds[10050].Tags)
	}
	// The owner is the identity: it may publish, others may not.
	note := nostr.Event{Kind: 1, Content: "signed by the owner", CreatedAt: nostr.Now(), Tags: nostr.Tags{}}
	_ = note.Sign(sk)
	if err := r.Publish(ctx, &note); err != nil {
		t.Fatalf("owner publish: %v", err)
	}

	resp, err := http.Get(strings.Replace(p.rt.RelayURL, "ws://", "http://", 1) + "/.well-known/nostr.json?name=alice")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var doc struct{ Names map[string]string }
	if err := json.Unmarshal(body, &doc); err != nil || doc.Names["alice"] != pk || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("NIP-05: %s %v", body, err)
	}

	// Restart: the claim is not made twice.
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	<-p.done
	p.done <- nil
	p2 := startProcEnv(t, dir, env, "--log.level", "debug")
	r2, err := nostrclient.Dial(ctx, p2.rt.RelayURL, nostrclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	claims, err := r2.Query(ctx, nostr.Filter{Authors: []string{pk}, Kinds: []int{identity.KindHandleClaim}})
	if err != nil || len(claims) != 1 {
		t.Fatalf("claims after restart: %d %v", len(claims), err)
	}

	logs := initOut + p.logs.String() + p2.logs.String()
	if !strings.Contains(logs, "identity unlocked") || !strings.Contains(logs, "published") {
		t.Fatalf("logs do not cover unlock and publishing:\n%s", logs)
	}
	// One line per unlock: the node's start said "identity unlocked" twice
	// (the keystore's line, then its own with the fingerprint).
	if n := strings.Count(p.logs.String(), "identity unlocked"); n != 1 {
		t.Errorf("the first start logs \"identity unlocked\" %d times, want once:\n%s", n, p.logs.String())
	}
	for name, secret := range map[string]string{"secret hex": sk, "nsec": nsec, "passphrase": testPass, "ncryptsec": ksFile.Ncryptsec} {
		if secret == "" {
			t.Fatalf("%s unknown to the test", name)
		}
		if strings.Contains(logs, secret) {
			t.Errorf("the %s appears in the logs", name)
		}
	}
}

// id revoke: the running node revokes its handle's claim with a valid
// kind 3781 event, stops serving the handle over NIP-05, refuses a second
// revocation, and after a restart neither claims nor serves the handle again.
func TestRevokeHandle(t *testing.T) {
	dir := t.TempDir()
	env := []string{"ANCHORCHAT_PASSPHRASE=" + testPass}
	if out, err := cli(t, env, "init", "--scrypt-logn", "10", "--handle", "carol", "--network", "regtest", "--datadir", dir); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	pk := strings.TrimSpace(strings.TrimPrefix(grepLine(t, dir, "pubkey:"), "pubkey:"))
	p := startProcEnv(t, dir, env)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nip05 := func(rt string) map[string]string {
		t.Helper()
		resp, err := http.Get(strings.Replace(rt, "ws://", "http://", 1) + "/.well-known/nostr.json?name=carol")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var doc struct{ Names map[string]string }
		if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
			t.Fatal(err)
		}
		return doc.Names
	}
	if got := nip05(p.rt.RelayURL); got["carol"] != pk {
		t.Fatalf("NIP-05 before revoking: %v, want carol → %s", got, pk)
	}
	client := []string{"--network", "regtest", "--datadir", dir}
	status := func(want string) {
		t.Helper()
		out, err := cli(t, nil, append([]string{"status"}, client...)...)
		if err != nil || !strings.Contains(out, "handle: carol ("+want+")") {
			t.Fatalf("status: %v, want handle: carol (%s)\n%s", err, want, out)
		}
	}
	status("held")

	if out, err := cli(t, nil, append([]string{"id", "revoke", "--reason", "laptop stolen"}, client...)...); err == nil || !strings.Contains(out, "--yes") {
		t.Fatalf("id revoke without --yes: %v\n%s", err, out)
	}
	long := strings.Repeat("x", identity.MaxRevokeReason+1)
	if out, err := cli(t, nil, append([]string{"id", "revoke", "--yes", "--reason", long}, client...)...); err == nil || !strings.Contains(out, "at most 280") {
		t.Fatalf("id revoke with a long reason: %v\n%s", err, out)
	}
	out, err := cli(t, nil, append([]string{"id", "revoke", "--yes", "--json", "--reason", "laptop stolen"}, client...)...)
	if err != nil {
		t.Fatalf("id revoke: %v\n%s", err, out)
	}
	var res struct{ Handle, Revocation, Claim string }
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Handle != "carol" {
		t.Fatalf("id revoke printed %q (%v)", out, err)
	}

	r, err := nostrclient.Dial(ctx, p.rt.RelayURL, nostrclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	evts, err := r.Query(ctx, nostr.Filter{Authors: []string{pk}, Kinds: []int{identity.KindHandleClaim, identity.KindHandleRevocation}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := identity.ValidateChain(evts)
	if err != nil {
		t.Fatalf("the chain on the relay: %v", err)
	}
	if !st.Revoked || st.Revocation.ID != res.Revocation || st.Revocation.Reason != "laptop stolen" || st.Genesis.ID != res.Claim || len(evts) != 2 {
		t.Fatalf("chain: revoked %v, revocation %+v, genesis %s; printed %+v", st.Revoked, st.Revocation, st.Genesis.ID, res)
	}
	if got := nip05(p.rt.RelayURL); got["carol"] != "" {
		t.Fatalf("NIP-05 still serves carol after the revocation: %v", got)
	}
	if out, err := cli(t, nil, append([]string{"id", "revoke", "--yes"}, client...)...); err == nil || !strings.Contains(out, "already revoked, by event "+res.Revocation) {
		t.Fatalf("a second id revoke: %v\n%s", err, out)
	}
	status("revoked")

	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	<-p.done
	p.done <- nil
	p2 := startProcEnv(t, dir, env)
	if got := nip05(p2.rt.RelayURL); got["carol"] != "" {
		t.Fatalf("NIP-05 serves carol again after a restart: %v", got)
	}
	r2, err := nostrclient.Dial(ctx, p2.rt.RelayURL, nostrclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	claims, err := r2.Query(ctx, nostr.Filter{Authors: []string{pk}, Kinds: []int{identity.KindHandleClaim}})
	if err != nil || len(claims) != 1 {
		t.Fatalf("claims after the restart: %d (%v), want the one revoked", len(claims), err)
	}
	if !strings.Contains(p2.logs.String(), "this key revoked its handle") {
		t.Fatalf("the restarted node does not say the handle is revoked:\n%s", p2.logs.String())
	}
	status("revoked")
}

// grepLine runs `id show` on dir and returns its line starting with prefix.
func grepLine(t *testing.T, dir, prefix string) string {
	t.Helper()
	out, err := cli(t, nil, "id", "show", "--network", "regtest", "--datadir", dir)
	if err != nil {
		t.Fatalf("id show: %v\n%s", err, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	t.Fatalf("id show has no %q line:\n%s", prefix, out)
	return ""
}

// Each id subcommand's --help describes that subcommand and lists only the
// flags it reads.
func TestIDSubcommandHelp(t *testing.T) {
	for _, c := range []struct {
		sub       string
		want, not []string
	}{
		{"show", []string{"Usage: anchorchat id show", "fingerprint", "-datadir"}, []string{"-passphrase-file", "-scrypt-logn", "id passwd", "Re-encrypts"}},
		{"export", []string{"Usage: anchorchat id export", "-nsec", "-passphrase-file"}, []string{"-scrypt-logn", "Re-encrypts"}},
		{"import", []string{"Usage: anchorchat id import --key-file", "-key-file", "-scrypt-logn", "-passphrase-file"}, []string{"-nsec", "Re-encrypts"}},
		{"passwd", []string{"Usage: anchorchat id passwd", "Re-encrypts", "-new-passphrase-file", "-scrypt-logn"}, []string{"-key-file", "ncryptsec)"}},
		{"revoke", []string{"Usage: anchorchat id revoke --yes", "REVOKED", "-reason", "-yes"}, []string{"-passphrase-file", "-scrypt-logn", "Re-encrypts"}},
	} {
		out, err := cli(t, nil, "id", c.sub, "--help")
		if err != nil {
			t.Fatalf("id %s --help: %v\n%s", c.sub, err, out)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("id %s --help lacks %q:\n%s", c.sub, w, out)
			}
		}
		for _, n := range c.not {
			if strings.Contains(out, n) {
				t.Errorf("id %s --help shows %q, which is not this subcommand's:\n%s", c.sub, n, out)
			}
		}
	}
	if out, err := cli(t, nil, "id", "frob"); err == nil || !strings.Contains(out, `unknown id subcommand "frob"`) {
		t.Fatalf("id frob: %v\n%s", err, out)
	}
}

// init --handle adds its line to a config file that does not end in a
// newline on a line of its own (it was glued to the last one, "network =
// regtesthandle = bob", which the node then refused).
func TestWriteConfigDefaultsAfterAnUnendedLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "anchorchat.conf")
	if err := os.WriteFile(path, []byte("network = regtest"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeConfigDefaults(path, "regtest", "bob"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "network = regtest\nhandle = bob\n" {
		t.Fatalf("config file %q (%v)", b, err)
	}
}

// The command init prints to start the node survives the shell whatever
// the data dir's name: quoted in single quotes when it has characters a
// shell would act on ($ and ` expanded inside double quotes).
func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/tmp/plain":    "/tmp/plain",
		"/tmp/a b":      "'/tmp/a b'",
		"/tmp/$HOME":    "'/tmp/$HOME'",
		"/tmp/`x`":      "'/tmp/`x`'",
		"/tmp/it's":     `'/tmp/it'\''s'`,
		"/tmp/a;b&c|d*": "'/tmp/a;b&c|d*'",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

// id passwd changes the anchoring wallet's passphrase too: the node opens
// wallet.json with the identity's passphrase, so after a change of the
// identity's alone a node with btcd could not start ("wrong password").
// With a node running on the data dir it refuses and changes nothing (the
// node would write the wallet back under the old passphrase).
func TestPasswdChangesTheWalletToo(t *testing.T) {
	dir, _ := newUser(t, "gil")
	walletPath := filepath.Join(dir, node.WalletFile)
	cfg := wallet.Config{Params: &chaincfg.RegressionNetParams, ScryptLogN: 4}
	if _, err := wallet.Create(walletPath, []byte(testPass), cfg); err != nil {
		t.Fatal(err)
	}
	newPass := filepath.Join(t.TempDir(), "new")
	const np = "another long passphrase for the wallet"
	if err := os.WriteFile(newPass, []byte(np+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"ANCHORCHAT_PASSPHRASE=" + testPass}
	args := []string{"id", "passwd", "--new-passphrase-file", newPass, "--network", "regtest", "--datadir", dir}

	p := startProcEnv(t, dir, env)
	before, _ := os.ReadFile(walletPath)
	if out, err := cli(t, env, args...); err == nil || !strings.Contains(out, "stop it first") {
		t.Fatalf("id passwd beside a running node: %v\n%s", err, out)
	}
	if after, _ := os.ReadFile(walletPath); string(after) != string(before) {
		t.Fatal("id passwd beside a running node rewrote the wallet")
	}
	stopProc(t, p)

	if out, err := cli(t, env, args...); err != nil {
		t.Fatalf("id passwd: %v\n%s", err, out)
	}
	if _, err := wallet.Open(walletPath, []byte(np), cfg); err != nil {
		t.Fatalf("the wallet under the new passphrase: %v", err)
	}
	ks := node.Keystore(dir, slog.New(slog.DiscardHandler))
	if _, err := ks.Unlock(context.Background(), np); err != nil {
		t.Fatalf("the identity under the new passphrase: %v", err)
	}
}

// A key file that holds no key (empty, or stdin from an unset variable) is
// refused: init and id import made a new key instead, and said "identity
// created", so the user believed the key they meant to import was in use.
// A key after blank lines is the key.
func TestImportRefusesAnEmptyKeyFile(t *testing.T) {
	env := []string{"ANCHORCHAT_PASSPHRASE=" + testPass}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\n  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"id", "import", "--key-file", empty},
		{"init", "--key-file", empty},
		{"id", "import", "--key-file", "-"},
	} {
		dir := t.TempDir()
		cmd := exec.Command(binPath, append(args, "--scrypt-logn", "4", "--network", "regtest", "--datadir", dir)...)
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "no key") {
			t.Errorf("%v with no key in the file: %v\n%s", args, err, out)
		}
		if _, err := os.Stat(filepath.Join(dir, node.KeystoreFile)); !os.IsNotExist(err) {
			t.Errorf("%v with no key in the file wrote a keystore (%v)", args, err)
		}
	}
	sk := nostr.GeneratePrivateKey()
	pk, _ := nostr.GetPublicKey(sk)
	npub, _ := nip19.EncodePublicKey(pk)
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte("\n"+sk+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := cli(t, env, "id", "import", "--key-file", keyFile, "--scrypt-logn", "4", "--network", "regtest", "--datadir", t.TempDir())
	if err != nil || !strings.Contains(out, npub) {
		t.Fatalf("id import of a key after a blank line: %v\n%s", err, out)
	}
}
