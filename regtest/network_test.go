package regtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anchorchat/anchorchat/internal/freeport"
	"github.com/anchorchat/anchorchat/wallet"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
	"github.com/lightningnetwork/lnd/lnrpc"
	"github.com/lightningnetwork/lnd/lnrpc/routerrpc"
)

// TestNetwork is the end-to-end proof: btcd + 2 LND + the wallet; the wallet
// mines coinbase and pays both LNDs, a channel opens, an invoice of LND 1 is
// paid by LND 0 through routerrpc, and an OP_RETURN sent by the wallet is
// found in a mined block with the exact payload.
func TestNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("starts btcd and LND")
	}
	// The node hook: a stand-in process (sleep) that must be recorded and
	// stopped by the harness; the spec must point at the LND's files.
	var nodePID int
	t.Cleanup(func() { // runs after the network's cleanup
		if nodePID != 0 && pidAlive(nodePID, "") {
			t.Errorf("node process %d still running after cleanup", nodePID)
			_ = syscall.Kill(nodePID, syscall.SIGKILL)
		}
	})
	startNode := func(ctx context.Context, spec NodeSpec) (NodeInfo, error) {
		for _, f := range []string{spec.LND.TLSCertPath, spec.LND.MacaroonPath, spec.Btcd.RPCCert, spec.Dir} {
			if _, err := os.Stat(f); err != nil {
				return NodeInfo{}, err
			}
		}
		if spec.LND.Pubkey == "" || spec.LND.RPCAddr == "" || spec.Network != "regtest" {
			return NodeInfo{}, fmt.Errorf("incomplete spec %+v", spec)
		}
		cmd := exec.Command("sleep", "600")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return NodeInfo{}, err
		}
		go func() { _ = cmd.Wait() }()
		nodePID = cmd.Process.Pid
		return NodeInfo{PID: nodePID, Binary: "sleep", URL: "ws://127.0.0.1:1/" + spec.Name}, nil
	}
	// btcd's and lnd-0's p2p ports are taken before they bind (as when
	// another process binds them between the harness's probe and the
	// child's bind): each must be started again on other ports.
	var taken []*net.TCPAddr
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		taken = append(taken, l.Addr().(*net.TCPAddr))
	}
	upPorts = func(k int) ([]int, error) {
		p, err := freeport.Loopback(k)
		if err == nil {
			p[1], p[3] = taken[0].Port, taken[1].Port
		}
		return p, err
	}
	t.Cleanup(func() { upPorts = freeport.Loopback })
	n := Start(t, Options{FundSats: 4 * btcutil.SatoshiPerBitcoin, ChannelSats: 2_000_000, Nodes: 1, StartNode: startNode})
	if len(n.Nodes) != 1 || len(n.State.Nodes) != 1 || n.State.Nodes[0].PID != nodePID {
		t.Fatalf("node not recorded: %+v", n.State.Nodes)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// Both found their port taken, and run on others; the state file names
	// the processes and ports that run.
	st, err := ReadState(n.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range []struct{ name, log, p2p, stateP2P string }{
		{"btcd", n.State.Btcd.LogPath, n.State.Btcd.P2PAddr, st.Btcd.P2PAddr},
		{"lnd-0", n.LNDs[0].LogPath, n.LNDs[0].P2PAddr, st.LNDs[0].P2PAddr},
	} {
		b, err := os.ReadFile(c.log)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(taken[i].String()+": bind: address already in use")) {
			t.Errorf("%s's log does not show its taken port %s", c.name, taken[i])
		}
		if c.p2p == taken[i].String() || c.stateP2P != c.p2p {
			t.Errorf("%s listens on %s (state file: %s), taken: %s", c.name, c.p2p, c.stateP2P, taken[i])
		}
	}
	if st.Btcd.PID != n.State.Btcd.PID || st.LNDs[0].PID != n.LNDs[0].PID || !pidAlive(st.LNDs[0].PID, "") {
		t.Errorf("state file PIDs btcd %d lnd-0 %d, running %d %d", st.Btcd.PID, st.LNDs[0].PID, n.State.Btcd.PID, n.LNDs[0].PID)
	}

	// The wallet received coinbase (it is the mining address) and still
	// has plenty after funding.
	if err := n.Wallet.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	bal := n.Wallet.Balance()
	t.Logf("wallet balance: %+v", bal)
	if bal.Confirmed < 100*btcutil.SatoshiPerBitcoin || bal.Immature == 0 {
		t.Fatalf("wallet balance %+v: want mature and immature coinbase", bal)
	}

	// Both LNDs were paid by the wallet: 4 BTC each, minus channel funding
	// for LND 0.
	for i, l := range n.LNDs {
		wb, err := l.Client.WalletBalance(ctx, &lnrpc.WalletBalanceRequest{})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s on-chain: confirmed %d unconfirmed %d", l.Name, wb.ConfirmedBalance, wb.UnconfirmedBalance)
		total := wb.ConfirmedBalance + wb.UnconfirmedBalance
		switch i {
		case 0: // funded 4 BTC, 2M sat went into the channel plus fees
			if total < 4*1e8-2_000_000-100_000 || total > 4*1e8-2_000_000 {
				t.Fatalf("%s balance %d", l.Name, total)
			}
		case 1:
			if wb.ConfirmedBalance != 4*1e8 {
				t.Fatalf("%s confirmed balance %d, want 4 BTC", l.Name, wb.ConfirmedBalance)
			}
		}
	}

	// The channel 0→1 is active on both sides.
	chans, err := n.LNDs[0].Client.ListChannels(ctx, &lnrpc.ListChannelsRequest{ActiveOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(chans.Channels) != 1 || chans.Channels[0].RemotePubkey != n.LNDs[1].Pubkey || chans.Channels[0].Capacity != 2_000_000 {
		t.Fatalf("channels of lnd-0: %+v", chans.Channels)
	}

	// Invoice on LND 1, paid from LND 0 with routerrpc.SendPaymentV2.
	inv, err := n.LNDs[1].Client.AddInvoice(ctx, &lnrpc.Invoice{Memo: "regtest", Value: 12_345})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := n.LNDs[0].Router.SendPaymentV2(ctx, &routerrpc.SendPaymentRequest{
		PaymentRequest: inv.PaymentRequest, FeeLimitSat: 100, TimeoutSeconds: 60,
	})
	if err != nil {
		t.Fatal(err)
	}
	var pay *lnrpc.Payment
	for {
		p, err := stream.Recv()
		if err != nil {
			t.Fatalf("payment stream: %v", err)
		}
		if p.Status != lnrpc.Payment_IN_FLIGHT && p.Status != lnrpc.Payment_INITIATED {
			pay = p
			break
		}
	}
	if pay.Status != lnrpc.Payment_SUCCEEDED {
		t.Fatalf("payment %s: %s", pay.Status, pay.FailureReason)
	}
	pre, err := hex.DecodeString(pay.PaymentPreimage)
	if err != nil || len(pre) != 32 {
		t.Fatalf("preimage %q: %v", pay.PaymentPreimage, err)
	}
	if sum := sha256.Sum256(pre); !bytes.Equal(sum[:], inv.RHash) {
		t.Fatalf("preimage %s does not hash to payment hash %x", pay.PaymentPreimage, inv.RHash)
	}
	settled, err := n.LNDs[1].Client.LookupInvoice(ctx, &lnrpc.PaymentHash{RHash: inv.RHash})
	if err != nil {
		t.Fatal(err)
	}
	if settled.State != lnrpc.Invoice_SETTLED || settled.AmtPaidSat != 12_345 {
		t.Fatalf("invoice state %s paid %d", settled.State, settled.AmtPaidSat)
	}

	// OP_RETURN from the wallet, mined, found with the exact payload.
	payload := append([]byte("ACHR\x01"), bytes.Repeat([]byte{0xab}, 32)...)
	tx, err := n.Wallet.SendData(ctx, payload)
	if err != nil {
		t.Fatal(err)
	}
	hashes, err := n.Mine(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := wallet.NewRPCChain(n.Btcd).Block(ctx, hashes[0])
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, btx := range blk.Transactions {
		if btx.TxHash() != tx.TxHash() {
			continue
		}
		for _, out := range btx.TxOut {
			if len(out.PkScript) == 0 || out.PkScript[0] != txscript.OP_RETURN {
				continue
			}
			pushes, err := txscript.PushedData(out.PkScript)
			if err != nil || len(pushes) != 1 {
				t.Fatalf("OP_RETURN script %x: %v", out.PkScript, err)
			}
			if !bytes.Equal(pushes[0], payload) {
				t.Fatalf("payload %x, want %x", pushes[0], payload)
			}
			found = true
		}
	}
	if !found {
		t.Fatalf("OP_RETURN tx %s not found in block %s", tx.TxHash(), hashes[0])
	}
	if err := n.Wallet.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if b := n.Wallet.Balance(); b.Unconfirmed != 0 {
		t.Fatalf("after mining, unconfirmed %v", b.Unconfirmed)
	}
}

// TestUpStopsAStuckBtcd: a btcd that never answers makes Up fail within its
// own deadline (not hang as long as its caller's context lasts: forever for
// `regtest up`), with an error naming btcd and its log; and Close stops it.
func TestUpStopsAStuckBtcd(t *testing.T) {
	for _, mode := range []string{"hang", "exit"} {
		t.Run(mode, func(t *testing.T) {
			bin := fakeBinary(t, "btcd", mode)
			old := upTimeout
			upTimeout = 3 * time.Second
			t.Cleanup(func() { upTimeout = old })
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // only a backstop
			defer cancel()
			n, err := Up(ctx, Options{Dir: t.TempDir(), LNDs: -1, Binaries: &Binaries{Btcd: bin}, Logger: discardLog()})
			if err == nil || n == nil {
				t.Fatalf("Up with a %s btcd: %v, network %v", mode, err, n)
			}
			t.Logf("Up: %v", err)
			pid := n.State.Btcd.PID
			if cerr := n.Close(context.Background()); cerr != nil {
				t.Errorf("Close: %v", cerr)
			}
			if pidAlive(pid, bin) {
				t.Errorf("btcd (pid %d) still running after Close", pid)
			}
			if !strings.Contains(err.Error(), "btcd") || !strings.Contains(err.Error(), n.State.Btcd.LogPath) {
				t.Errorf("error does not name btcd and its log %s: %v", n.State.Btcd.LogPath, err)
			}
			if mode == "hang" && (!errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil) {
				t.Errorf("Up did not end by its own deadline (caller's context: %v): %v", ctx.Err(), err)
			}
			if mode == "exit" && !strings.Contains(err.Error(), "fake process: boom") {
				t.Errorf("error lacks the log tail: %v", err)
			}
		})
	}
}

// fakeTB is a testing_TB whose deadline is set and whose Fatalf ends the
// goroutine, as a test's does; cleanups are run by the caller.
type fakeTB struct {
	*testing.T
	deadline time.Time
	mu       sync.Mutex
	cleanups []func()
	fatal    string
}

func (f *fakeTB) Deadline() (time.Time, bool) { return f.deadline, true }
func (f *fakeTB) Cleanup(fn func())           { f.mu.Lock(); f.cleanups = append(f.cleanups, fn); f.mu.Unlock() }
func (f *fakeTB) Failed() bool                { f.mu.Lock(); defer f.mu.Unlock(); return f.fatal != "" }
func (f *fakeTB) Errorf(format string, a ...any) {
	f.T.Errorf(format, a...)
}
func (f *fakeTB) Fatalf(format string, a ...any) {
	f.mu.Lock()
	f.fatal = fmt.Sprintf(format, a...)
	f.mu.Unlock()
	runtime.Goexit()
}

// TestStartEndsBeforeTheTestsDeadline: a network stuck at start makes
// Start fail while the test still has time to stop it (at go test's
// -timeout the binary panics, its cleanups never run, and btcd and LND,
// in sessions of their own, run on for good).
func TestStartEndsBeforeTheTestsDeadline(t *testing.T) {
	bin := fakeBinary(t, "btcd", "hang")
	old := upTimeout
	upTimeout = time.Minute // only a backstop: the test's deadline comes first
	t.Cleanup(func() { upTimeout = old })
	oldMargin := startStopMargin
	startStopMargin = time.Second
	t.Cleanup(func() { startStopMargin = oldMargin })
	f := &fakeTB{T: t, deadline: time.Now().Add(3 * time.Second)}
	dir := t.TempDir()
	done := make(chan *Network)
	go func() {
		defer close(done)
		done <- Start(f, Options{Dir: dir, LNDs: -1, Binaries: &Binaries{Btcd: bin}})
	}()
	if n := <-done; n != nil {
		t.Fatal("Start of a network whose btcd never answers succeeded")
	}
	st, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Start: %s", f.fatal)
	if !strings.Contains(f.fatal, "test's deadline") {
		t.Errorf("Start did not end by the test's deadline: %s", f.fatal)
	}
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
	if pidAlive(st.Btcd.PID, bin) {
		t.Errorf("fake btcd (pid %d) still running after the cleanups", st.Btcd.PID)
	}
}

// TestUpRefusesWhileAnotherUpStarts: until the first up has written its
// state file (after btcd starts), a second up in the same directory saw no
// network, wiped the directory under the first and started a second btcd.
// Up holds a lock on the directory while it starts a network.
func TestUpRefusesWhileAnotherUpStarts(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "btcd", "the first up's")
	if err := os.MkdirAll(filepath.Dir(marker), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	first, err := os.Open(dir) // the first up's hold
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if err := syscall.Flock(int(first.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	bin := fakeBinary(t, "btcd", "exit")
	n, err := Up(context.Background(), Options{Dir: dir, LNDs: -1, Binaries: &Binaries{Btcd: bin}, Logger: discardLog()})
	if n != nil {
		_ = n.Close(context.Background())
	}
	if !errors.Is(err, ErrRunning) {
		t.Errorf("second up: %v, want ErrRunning", err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("second up removed the first's files: %v", err)
	}

	// Once the first is done, the directory is free again.
	if err := syscall.Flock(int(first.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	n, err = Up(context.Background(), Options{Dir: dir, LNDs: -1, Binaries: &Binaries{Btcd: bin}, Logger: discardLog()})
	if n != nil {
		_ = n.Close(context.Background())
	}
	if err == nil || errors.Is(err, ErrRunning) || !strings.Contains(err.Error(), "exited during startup") {
		t.Errorf("up after the lock is free: %v, want the fake btcd's exit", err)
	}
}

// TestStartLNDRecordsIt: an LND is in the state file as soon as it runs, so
// that an up killed before the network is ready (SIGKILL, a crash) leaves
// no LND that the next up or down cannot find (the state file named the
// LNDs only after 440 blocks were mined and the wallet synced).
func TestStartLNDRecordsIt(t *testing.T) {
	dir := t.TempDir()
	bin := fakeBinary(t, "lnd", "hang")
	n := &Network{Dir: dir, log: discardLog(), State: State{Version: 1, Dir: dir}}
	t.Cleanup(func() { _ = n.Close(context.Background()) })
	ports, err := freeport.Loopback(2)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.startLND(0, bin, ports[0], ports[1]); err != nil {
		t.Fatal(err)
	}
	st, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.LNDs) != 1 || st.LNDs[0].PID != n.LNDs[0].PID || !pidAlive(st.LNDs[0].PID, st.LNDs[0].Binary) {
		t.Fatalf("state file LNDs %+v, running pid %d", st.LNDs, n.LNDs[0].PID)
	}
}
