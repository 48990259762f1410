package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
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

	// A second up on the same directory is refused while the network lives.
	if out, err := up(); err == nil || !strings.Contains(out, "already running") {
		t.Fatalf("second up: %v\n%s", err, out)
	}

	if out, err := cli(t, nil, "regtest", "down", "--dir", dir); err != nil {
		t.Fatalf("regtest down: %v\n%s", err, out)
	}
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
		t.Errorf("btcd still running after down")
	}
}

// running tells whether pid is a live process: a zombie (exited, not yet
// reaped by an init that does not reap) is not running.
func running(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
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
