package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/anchorchat/anchorchat/regtest"
)

// `anchorchat regtest up` brings up btcd, two LND with a channel and two
// anchorchat nodes, each with its own identity, relay and LND connection;
// `regtest down` stops them all.
func TestRegtestUpStartsNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts btcd and LND")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute) // the first run may build lnd
	defer cancel()
	up := func() (string, error) {
		t.Helper()
		return cli(t, nil, "regtest", "up", "--detach", "--dir", dir, "--nodes", "2", "--fund", "1", "--channel-sats", "500000")
	}
	out, err := up()
	t.Cleanup(func() { _, _ = cli(t, nil, "regtest", "down", "--dir", dir, "--wipe") })
	if err != nil {
		t.Fatalf("regtest up: %v\n%s", err, out)
	}
	st, err := regtest.ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Nodes) != 2 || len(st.LNDs) != 2 {
		t.Fatalf("state: %d nodes, %d LNDs\n%s", len(st.Nodes), len(st.LNDs), out)
	}
	for i, want := range []string{"alice", "bob"} {
		n := st.Nodes[i]
		if !strings.Contains(out, n.Info["npub"]) || n.Info["handle"] != want {
			t.Fatalf("node %d: %+v not printed by up", i, n)
		}
		status, err := cli(t, nil, "status", "--network", "regtest", "--datadir", n.Info["datadir"])
		if err != nil || !strings.Contains(status, "handle: "+want) || !strings.Contains(status, n.Info["npub"]) {
			t.Fatalf("status of %s: %v\n%s", want, err, status)
		}
		var lnd regtest.LNDState = st.LNDs[i%len(st.LNDs)]
		if !strings.Contains(status, "lnd:    "+lnd.RPCAddr) {
			t.Fatalf("%s is not connected to %s:\n%s", want, lnd.RPCAddr, status)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.Replace(n.URL, "ws://", "http://", 1), nil)
		req.Header.Set("Accept", "application/nostr+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s's relay NIP-11: %v", want, err)
		}
		resp.Body.Close()
	}

	// alice tips bob inside their conversation, through LND-0 → LND-1.
	alice := []string{"--network", "regtest", "--datadir", st.Nodes[0].Info["datadir"]}
	bob := []string{"--network", "regtest", "--datadir", st.Nodes[1].Info["datadir"]}
	out, err = cli(t, nil, append(append([]string{"tip", "--wait"}, alice...), "@bob", "1000", "thanks for the relay")...)
	if err != nil || !strings.Contains(out, "settled") {
		t.Fatalf("tip: %v\n%s", err, out)
	}
	waitFor(t, "bob's payments show the settled tip", func() (bool, string) {
		out, _ := cli(t, nil, append([]string{"payments"}, bob...)...)
		return strings.Contains(out, "from") && strings.Contains(out, "1000 sat") && strings.Contains(out, "settled"), out
	})
	tctx, tcancel := context.WithTimeout(ctx, 3*time.Second)
	view, _ := exec.CommandContext(tctx, binPath, append(append([]string{"chat", "--no-input"}, alice...), "@bob")...).Output()
	tcancel()
	if !strings.Contains(string(view), "tip of 1000 sat") || !strings.Contains(string(view), "thanks for the relay") {
		t.Fatalf("alice's conversation does not show the tip inline:\n%s", view)
	}

	// alice anchors her handle claim on-chain; bob verifies @alice against btcd.
	var wv struct {
		Address string `json:"address"`
	}
	out, err = cli(t, nil, append([]string{"wallet", "--json"}, alice...)...)
	if err != nil || json.Unmarshal([]byte(out), &wv) != nil || wv.Address == "" {
		t.Fatalf("wallet: %v\n%s", err, out)
	}
	if out, err := cli(t, nil, "regtest", "fund", "--dir", dir, wv.Address, "0.01"); err != nil {
		t.Fatalf("fund: %v\n%s", err, out)
	}
	out, err = cli(t, nil, append([]string{"anchor", "now"}, alice...)...)
	if err != nil || !strings.Contains(out, "1 claims") {
		t.Fatalf("anchor now: %v\n%s", err, out)
	}
	if out, err := cli(t, nil, append(append([]string{"verify"}, bob...), "@alice")...); err == nil || strings.Contains(out, "VERIFIED") {
		t.Fatalf("@alice verified before her anchor was mined: %s", out)
	}
	if out, err := cli(t, nil, "regtest", "mine", "--dir", dir, "2"); err != nil {
		t.Fatalf("mine: %v\n%s", err, out)
	}
	waitFor(t, "bob verifies @alice on-chain", func() (bool, string) {
		out, err := cli(t, nil, append(append([]string{"verify"}, bob...), "@alice")...)
		return err == nil && strings.Contains(out, "VERIFIED @alice"), out
	})
	// Conversations show the contact's on-chain verdict.
	if out, err := cli(t, nil, append(append([]string{"send", "--wait"}, alice...), "@bob", "my handle is anchored")...); err != nil {
		t.Fatalf("send: %v\n%s", err, out)
	}
	waitFor(t, "bob's inbox shows alice as VERIFIED", func() (bool, string) {
		out, _ := cli(t, nil, append([]string{"inbox"}, bob...)...)
		return strings.Contains(out, "@alice (claimed; VERIFIED"), out
	})
	out, _ = cli(t, nil, append(append([]string{"verify", "--json"}, bob...), "@bob")...)
	if !strings.Contains(out, `"UNANCHORED"`) {
		t.Fatalf("@bob never anchored, verdict: %s", out)
	}

	// alice revokes her handle: bob's verdict turns REVOKED at once, with
	// her reason, and the revocation goes into the next anchored batch.
	out, err = cli(t, nil, append([]string{"id", "revoke", "--yes", "--reason", "key compromised"}, alice...)...)
	if err != nil || !strings.Contains(out, "queued for anchoring") {
		t.Fatalf("id revoke: %v\n%s", err, out)
	}
	waitFor(t, "bob sees @alice revoked", func() (bool, string) {
		out, _ := cli(t, nil, append(append([]string{"verify"}, bob...), "@alice")...)
		return strings.Contains(out, "REVOKED @alice") && strings.Contains(out, "key compromised"), out
	})
	out, err = cli(t, nil, append([]string{"anchor", "now"}, alice...)...)
	if err != nil || !strings.Contains(out, "1 claims") {
		t.Fatalf("anchor now (the revocation): %v\n%s", err, out)
	}

	// A second up on the same directory is refused while the network lives.
	if out, err := up(); err == nil || !strings.Contains(out, "already running") {
		t.Fatalf("second up: %v\n%s", err, out)
	}

	out, err = cli(t, nil, "regtest", "down", "--dir", dir)
	if err != nil {
		t.Fatalf("regtest down: %v\n%s", err, out)
	}
	t.Logf("down:\n%s", out)
	for _, n := range st.Nodes {
		if running(n.PID) {
			t.Errorf("node %s (pid %d) still running after down", n.Name, n.PID)
		}
	}
	for _, l := range st.LNDs {
		if running(l.PID) {
			t.Errorf("%s (pid %d) still running after down", l.Name, l.PID)
		}
	}
	if running(st.Btcd.PID) {
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", st.Btcd.PID))
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", st.Btcd.PID))
		t.Errorf("btcd still running after down: %s | %q | recorded binary %q", stat, cmdline, st.Btcd.Binary)
	}
}

// running tells whether pid is a live process: a zombie (exited, not yet
// reaped by an init that does not reap) is not running, nor is a process
// caught exiting (its memory, and so its cmdline, already released).
func running(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err != nil || len(cmdline) == 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	_, after, ok := strings.Cut(string(b), ") ")
	return ok && !strings.HasPrefix(after, "Z") && !strings.HasPrefix(after, "X")
}
