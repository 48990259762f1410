package main

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/anchor"
	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/internal/node"
	"github.com/anchorchat/anchorchat/internal/nostrclient"
	"github.com/anchorchat/anchorchat/regtest"
	"github.com/anchorchat/anchorchat/wallet"
)

// A user who runs the node first without btcd (the README's command) has a
// handle claim in the store that no batcher saw. Once btcd is configured, the
// node hands that claim to the batcher at start, and it gets anchored and
// VERIFIED, once. (A claim still queued when the node stopped is in the same
// state, stored but unknown to the batcher: TestCatchUpClaims in
// internal/node covers the catch-up itself.)
func TestClaimStoredWithoutBtcdIsAnchoredLater(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts btcd")
	}
	dir := t.TempDir()
	env := []string{"ANCHORCHAT_PASSPHRASE=" + testPass}
	if out, err := cli(t, env, "init", "--scrypt-logn", "10", "--handle", "dave", "--network", "regtest", "--datadir", dir); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	pk := strings.TrimSpace(strings.TrimPrefix(grepLine(t, dir, "pubkey:"), "pubkey:"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	// First run, without btcd: the node claims @dave on its relay.
	p := startProcEnv(t, dir, env)
	r, err := nostrclient.Dial(ctx, p.rt.RelayURL, nostrclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	claims, err := r.Query(ctx, nostr.Filter{Authors: []string{pk}, Kinds: []int{identity.KindHandleClaim}})
	r.Close()
	if err != nil || len(claims) != 1 {
		t.Fatalf("the claim on the relay: %d (%v), want 1", len(claims), err)
	}
	stopProc(t, p)

	// Second run, with btcd.
	btc := regtest.Start(t, regtest.Options{LNDs: -1})
	b := btc.State.Btcd
	p = startProcEnv(t, dir, env, "--btcd.rpcserver", b.RPCAddr, "--btcd.rpcuser", b.RPCUser, "--btcd.rpcpass", b.RPCPass,
		"--btcd.rpccert", b.RPCCert, "--anchor.confirmations", "1", "--anchor.poll-interval", "500ms")
	client := []string{"--network", "regtest", "--datadir", dir}
	out, err := cli(t, nil, append([]string{"wallet", "--json"}, client...)...)
	var w node.WalletView
	if err != nil || json.Unmarshal([]byte(out), &w) != nil {
		t.Fatalf("wallet: %v\n%s", err, out)
	}
	addr, err := btcutil.DecodeAddress(w.Address, regtest.Params)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := btc.Wallet.Send(ctx, wallet.PayTo(addr, btcutil.SatoshiPerBitcoin/100)); err != nil {
		t.Fatal(err)
	}
	if _, err := btc.Mine(ctx, 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the node's wallet sees its funds", func() (bool, string) {
		out, err := cli(t, nil, append([]string{"wallet", "--json"}, client...)...)
		return err == nil && json.Unmarshal([]byte(out), &w) == nil && w.Confirmed > 0, out
	})

	var batches []anchor.BatchInfo
	waitFor(t, "anchor now anchors the claim stored before btcd was set", func() (bool, string) {
		out, err := cli(t, nil, append([]string{"anchor", "now", "--json"}, client...)...)
		return err == nil && json.Unmarshal([]byte(out), &batches) == nil && len(batches) == 1, out
	})
	if batches[0].Claims != 1 {
		t.Fatalf("batch %+v: want the one claim", batches[0])
	}
	if _, err := btc.Mine(ctx, 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "@dave verifies", func() (bool, string) {
		out, err := cli(t, nil, append(append([]string{"verify", "--json"}, client...), "@dave")...)
		var v anchor.Verdict
		return err == nil && json.Unmarshal([]byte(out), &v) == nil && v.Status == anchor.Verified && v.PubKey == pk, out
	})
	// The next start hands nothing over again.
	stopProc(t, p)
	p = startProcEnv(t, dir, env, "--btcd.rpcserver", b.RPCAddr, "--btcd.rpcuser", b.RPCUser, "--btcd.rpcpass", b.RPCPass,
		"--btcd.rpccert", b.RPCCert, "--anchor.confirmations", "1")
	if out, err := cli(t, nil, append([]string{"anchor", "now"}, client...)...); err == nil || !strings.Contains(out, "no pending claims") {
		t.Fatalf("anchor now after a restart: %v\n%s", err, out)
	}
}

// stopProc stops a node with SIGINT and waits for it to exit.
func stopProc(t *testing.T, p *proc) {
	t.Helper()
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	err := <-p.done
	p.done <- err // for the cleanup
	if err != nil {
		t.Fatalf("node exited with %v:\n%s", err, p.logs.String())
	}
}
