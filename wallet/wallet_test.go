package wallet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

var params = &chaincfg.RegressionNetParams

// fakeChain is an in-memory Chain: blocks are lists of transactions, the
// mempool is what Broadcast received since the last mined block.
type fakeChain struct {
	mu      sync.Mutex
	blocks  []*wire.MsgBlock
	mempool []*wire.MsgTx
	fee     btcutil.Amount
}

func (c *fakeChain) BestHeight(context.Context) (int32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int32(len(c.blocks) - 1), nil
}

func (c *fakeChain) BlockHash(_ context.Context, h int32) (*chainhash.Hash, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h < 0 || int(h) >= len(c.blocks) {
		return nil, fmt.Errorf("no block %d", h)
	}
	hash := c.blocks[h].BlockHash()
	return &hash, nil
}

func (c *fakeChain) Block(_ context.Context, hash *chainhash.Hash) (*wire.MsgBlock, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range c.blocks {
		if b.BlockHash() == *hash {
			return b, nil
		}
	}
	return nil, fmt.Errorf("no block %s", hash)
}

func (c *fakeChain) Mempool(context.Context) ([]*wire.MsgTx, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*wire.MsgTx(nil), c.mempool...), nil
}

func (c *fakeChain) Broadcast(_ context.Context, tx *wire.MsgTx) (*chainhash.Hash, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mempool = append(c.mempool, tx)
	h := tx.TxHash()
	return &h, nil
}

func (c *fakeChain) FeeRate(context.Context, int) (btcutil.Amount, error) { return c.fee, nil }

// mine appends a block whose coinbase pays value to script, with the mempool.
func (c *fakeChain) mine(script []byte, value btcutil.Amount) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cb := wire.NewMsgTx(1)
	height := len(c.blocks)
	cb.AddTxIn(&wire.TxIn{
		PreviousOutPoint: wire.OutPoint{Index: wire.MaxPrevOutIndex},
		SignatureScript:  []byte{byte(height), byte(height >> 8), 0x51},
	})
	cb.AddTxOut(wire.NewTxOut(int64(value), script))
	var prev chainhash.Hash
	if height > 0 {
		prev = c.blocks[height-1].BlockHash()
	}
	b := wire.NewMsgBlock(wire.NewBlockHeader(1, &prev, &chainhash.Hash{}, 0, uint32(height)))
	b.AddTransaction(cb)
	for _, tx := range c.mempool {
		b.AddTransaction(tx)
	}
	// Blocks of two branches at one height differ by their transactions.
	var txs []*btcutil.Tx
	for _, tx := range b.Transactions {
		txs = append(txs, btcutil.NewTx(tx))
	}
	b.Header.MerkleRoot = blockchain.CalcMerkleRoot(txs, false)
	c.mempool = nil
	c.blocks = append(c.blocks, b)
}

func p2wpkhScript(t testing.TB, key *btcec.PrivateKey) []byte {
	t.Helper()
	addr, err := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(key.PubKey().SerializeCompressed()), params)
	if err != nil {
		t.Fatal(err)
	}
	s, err := txscript.PayToAddrScript(addr)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func coin(i byte, v btcutil.Amount, script []byte) Coin {
	return Coin{OutPoint: wire.OutPoint{Hash: chainhash.Hash{i}, Index: uint32(i)}, Value: v, PkScript: script}
}

func payOut(t testing.TB, v btcutil.Amount) *wire.TxOut {
	t.Helper()
	k, _ := btcec.NewPrivateKey()
	return wire.NewTxOut(int64(v), p2wpkhScript(t, k))
}

func TestSelectExactMatch(t *testing.T) {
	key, _ := btcec.NewPrivateKey()
	script := p2wpkhScript(t, key)
	out := payOut(t, 100_000)
	rate := btcutil.Amount(2000)
	fee := FeeForVSize(rate, EstimateVSize(1, []*wire.TxOut{out}))
	coins := []Coin{
		coin(1, 5_000_000, script), // large: would make change
		coin(2, 100_000+fee, script),
		coin(3, 40_000, script),
	}
	sel, err := SelectCoins(coins, []*wire.TxOut{out}, rate, script)
	if err != nil {
		t.Fatal(err)
	}
	if len(sel.Inputs) != 1 || sel.Inputs[0].OutPoint != coins[1].OutPoint {
		t.Fatalf("exact match not chosen: %+v", sel.Inputs)
	}
	if sel.Change != 0 || sel.Fee != fee {
		t.Fatalf("change %v fee %v, want 0 and %v", sel.Change, sel.Fee, fee)
	}
}

func TestSelectInsufficientFunds(t *testing.T) {
	key, _ := btcec.NewPrivateKey()
	script := p2wpkhScript(t, key)
	coins := []Coin{coin(1, 30_000, script), coin(2, 20_000, script)}
	_, err := SelectCoins(coins, []*wire.TxOut{payOut(t, 50_000)}, 2000, script)
	if !errors.Is(err, ErrInsufficientFunds) {
		t.Fatalf("err = %v, want ErrInsufficientFunds", err)
	}
	var ife *InsufficientFundsError
	if !errors.As(err, &ife) {
		t.Fatal("not an *InsufficientFundsError")
	}
	if ife.Have != 50_000 || ife.Need <= 50_000 {
		t.Fatalf("have %d need %d", ife.Have, ife.Need)
	}
	msg := err.Error()
	if !strings.Contains(msg, "have 50000 sat") || !strings.Contains(msg, fmt.Sprintf("need %d sat", int64(ife.Need))) {
		t.Fatalf("message does not name have/need: %q", msg)
	}
	// No coins at all.
	if _, err := SelectCoins(nil, []*wire.TxOut{payOut(t, 1000)}, 2000, script); !errors.Is(err, ErrInsufficientFunds) {
		t.Fatalf("no coins: %v", err)
	}
}

func TestSelectDustChangeDropped(t *testing.T) {
	key, _ := btcec.NewPrivateKey()
	script := p2wpkhScript(t, key)
	out := payOut(t, 100_000)
	rate := btcutil.Amount(2000)
	feeNo := FeeForVSize(rate, EstimateVSize(2, []*wire.TxOut{out}))
	// Two coins whose total leaves 300 sat over outputs+fee: below dust,
	// so no change and the 300 sat go to the fee.
	total := 100_000 + feeNo + 300
	coins := []Coin{coin(1, total-60_000, script), coin(2, 60_000, script)}
	sel, err := SelectCoins(coins, []*wire.TxOut{out}, rate, script)
	if err != nil {
		t.Fatal(err)
	}
	if len(sel.Inputs) != 2 || sel.Change != 0 {
		t.Fatalf("inputs %d change %v", len(sel.Inputs), sel.Change)
	}
	if sel.Fee != feeNo+300 {
		t.Fatalf("fee %v, want %v", sel.Fee, feeNo+300)
	}
	// With plenty over, change is made and balances.
	coins = []Coin{coin(1, 1_000_000, script)}
	sel, err = SelectCoins(coins, []*wire.TxOut{out}, rate, script)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Change < DustLimit || sel.Change+sel.Fee+100_000 != 1_000_000 {
		t.Fatalf("change %v fee %v", sel.Change, sel.Fee)
	}
}

// signedTx builds and signs a tx spending n coins to a payment, change and
// an OP_RETURN.
func signedTx(t testing.TB, n int) (*wire.MsgTx, []Coin, Selection) {
	t.Helper()
	var coins []Coin
	var keys []*btcec.PrivateKey
	for i := 0; i < n; i++ {
		k, _ := btcec.NewPrivateKey()
		keys = append(keys, k)
		coins = append(coins, coin(byte(i+1), 20_000, p2wpkhScript(t, k)))
	}
	data, _ := txscript.NullDataScript(bytes.Repeat([]byte{7}, 80))
	outs := []*wire.TxOut{payOut(t, btcutil.Amount(n)*20_000-10_000), wire.NewTxOut(0, data)}
	ck, _ := btcec.NewPrivateKey()
	change := p2wpkhScript(t, ck)
	sel, err := SelectCoins(coins, outs, 1000, change)
	if err != nil {
		t.Fatal(err)
	}
	if len(sel.Inputs) != n {
		t.Fatalf("selected %d of %d", len(sel.Inputs), n)
	}
	byOp := map[wire.OutPoint]*btcec.PrivateKey{}
	for i, c := range coins {
		byOp[c.OutPoint] = keys[i]
	}
	var ks []*btcec.PrivateKey
	for _, c := range sel.Inputs {
		ks = append(ks, byOp[c.OutPoint])
	}
	tx := BuildTx(sel, outs, change)
	if err := SignP2WPKH(tx, sel.Inputs, ks); err != nil {
		t.Fatal(err)
	}
	return tx, sel.Inputs, sel
}

func TestFeeEstimateMatchesSignedVSize(t *testing.T) {
	for _, n := range []int{1, 2, 5, 30} {
		for rep := 0; rep < 5; rep++ {
			tx, _, sel := signedTx(t, n)
			real := (blockchain.GetTransactionWeight(btcutil.NewTx(tx)) + 3) / 4
			if sel.VSize < real {
				t.Fatalf("%d inputs: estimate %d < real %d (underpays)", n, sel.VSize, real)
			}
			if sel.VSize-real > int64(n) {
				t.Fatalf("%d inputs: estimate %d exceeds real %d by more than 1 vbyte per input", n, sel.VSize, real)
			}
			// The fee paid covers the real size at the rate.
			if sel.Fee < FeeForVSize(1000, real) {
				t.Fatalf("fee %v below rate for real size %d", sel.Fee, real)
			}
		}
	}
}

func TestSignVerifiedByScriptEngine(t *testing.T) {
	tx, prevs, _ := signedTx(t, 3)
	if err := VerifyTx(tx, prevs); err != nil {
		t.Fatal(err)
	}
	// Tamper with an output: every signature (SIGHASH_ALL) must fail.
	bad := tx.Copy()
	bad.TxOut[0].Value--
	if err := VerifyTx(bad, prevs); err == nil {
		t.Fatal("tampered tx verified")
	}
	// Wrong prevout amount (segwit signs the amount).
	prevs2 := append([]Coin(nil), prevs...)
	prevs2[1].Value++
	if err := VerifyTx(tx, prevs2); err == nil {
		t.Fatal("wrong amount verified")
	}
}

func TestOutputChecks(t *testing.T) {
	if _, err := OpReturn(make([]byte, 81)).txOut(); err == nil {
		t.Fatal("81-byte OP_RETURN accepted")
	}
	if _, err := OpReturn(make([]byte, 80)).txOut(); err != nil {
		t.Fatal(err)
	}
	k, _ := btcec.NewPrivateKey()
	addr, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(k.PubKey().SerializeCompressed()), params)
	if _, err := PayTo(addr, 100).txOut(); err == nil {
		t.Fatal("dust output accepted")
	}
}

func TestWalletLifecycleOnFakeChain(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "wallet.json")
	chain := &fakeChain{}
	cfg := Config{Params: params, Chain: chain, ScryptLogN: 10}
	w, err := Create(path, []byte("pw"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("seed file mode: %v %v", st.Mode(), err)
	}
	raw, _ := os.ReadFile(path)
	mine, err := w.NewAddress()
	if err != nil {
		t.Fatal(err)
	}
	script, _ := txscript.PayToAddrScript(mine)
	other := payOut(t, 1) // a foreign script
	for i := 0; i < 110; i++ {
		chain.mine(script, 50*btcutil.SatoshiPerBitcoin)
	}
	if err := w.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// Tip 109, next block 110: coinbases at heights 0..10 are mature.
	b := w.Balance()
	if b.Confirmed != 11*50*btcutil.SatoshiPerBitcoin || b.Immature != 99*50*btcutil.SatoshiPerBitcoin {
		t.Fatalf("balance %+v", b)
	}

	otherAddr, _ := btcutil.NewAddressWitnessPubKeyHash(other.PkScript[2:], params)
	payload := []byte("anchorchat test payload")
	tx, err := w.Send(ctx, PayTo(otherAddr, 70*btcutil.SatoshiPerBitcoin), OpReturn(payload))
	if err != nil {
		t.Fatal(err)
	}
	if len(tx.TxIn) != 2 || len(tx.TxOut) != 3 {
		t.Fatalf("tx shape: %d in %d out", len(tx.TxIn), len(tx.TxOut))
	}
	b = w.Balance()
	if b.Confirmed != 9*50*btcutil.SatoshiPerBitcoin || b.Unconfirmed <= 29*btcutil.SatoshiPerBitcoin || b.Unconfirmed >= 30*btcutil.SatoshiPerBitcoin {
		t.Fatalf("after send: %+v", b)
	}
	// Insufficient funds names have/need.
	if _, err := w.Send(ctx, PayTo(otherAddr, 1000*btcutil.SatoshiPerBitcoin)); !errors.Is(err, ErrInsufficientFunds) {
		t.Fatalf("err %v", err)
	}
	chain.mine(other.PkScript, 50*btcutil.SatoshiPerBitcoin)
	if err := w.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	b2 := w.Balance()
	if b2.Unconfirmed != 0 || b2.Confirmed != b.Confirmed+b.Unconfirmed+50*btcutil.SatoshiPerBitcoin {
		t.Fatalf("after mining: %+v (before %+v)", b2, b)
	}
	// The OP_RETURN payload is in the block.
	last := chain.blocks[len(chain.blocks)-1]
	found := false
	for _, o := range last.Transactions[1].TxOut {
		pushes, err := txscript.PushedData(o.PkScript)
		if err == nil && len(o.PkScript) > 0 && o.PkScript[0] == txscript.OP_RETURN && len(pushes) == 1 && bytes.Equal(pushes[0], payload) {
			found = true
		}
	}
	if !found {
		t.Fatal("OP_RETURN payload not in block")
	}

	// Reopen: wrong password, then right one; counters persisted; rescan
	// gives the same balance.
	if _, err := Open(path, []byte("nope"), cfg); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	if bytes.Contains(raw, []byte(`"next_external": 0`)) == false {
		t.Fatalf("unexpected initial file %s", raw)
	}
	w2, err := Open(path, []byte("pw"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if w2.file.NextExt != 1 || w2.file.NextInt != 1 {
		t.Fatalf("counters %d/%d", w2.file.NextExt, w2.file.NextInt)
	}
	if err := w2.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if w2.Balance() != b2 {
		t.Fatalf("reopened balance %+v, want %+v", w2.Balance(), b2)
	}
	if _, err := Open(path, []byte("pw"), Config{Params: &chaincfg.MainNetParams}); err == nil {
		t.Fatal("regtest seed opened as mainnet")
	}
}

func TestFeeFloor(t *testing.T) {
	chain := &fakeChain{}
	w, err := New(bytes.Repeat([]byte{1}, 32), Config{Params: params, Chain: chain})
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := w.FeeRate(context.Background()); r != DefaultFeeFloor {
		t.Fatalf("no estimate: %v", r)
	}
	chain.fee = 50_000
	if r, _ := w.FeeRate(context.Background()); r != 50_000 {
		t.Fatalf("estimate: %v", r)
	}
}

// CreateTxExcept leaves alone the coins it is told are held (by signed
// transactions the mempool may not show), and says so with
// ErrInsufficientFunds when nothing else is left.
func TestCreateTxExceptLeavesHeldCoins(t *testing.T) {
	chain := &fakeChain{}
	w := minedWallet(t, chain, chain, 102) // coinbases at heights 0..2 are mature
	outs := []Output{OpReturn([]byte("held coins"))}
	var held []wire.OutPoint
	for i := range 3 {
		tx, _, _, err := w.CreateTxExcept(outs, 1000, held)
		if err != nil {
			t.Fatalf("tx %d: %v", i, err)
		}
		for _, in := range tx.TxIn {
			if slices.Contains(held, in.PreviousOutPoint) {
				t.Fatalf("tx %d spends held coin %s", i, in.PreviousOutPoint)
			}
			held = append(held, in.PreviousOutPoint)
		}
	}
	if _, _, _, err := w.CreateTxExcept(outs, 1000, held); !errors.Is(err, ErrInsufficientFunds) {
		t.Fatalf("every mature coin held: %v, want ErrInsufficientFunds", err)
	}
	if tx, _, _, err := w.CreateTx(outs, 1000); err != nil || !slices.Contains(held, tx.TxIn[0].PreviousOutPoint) {
		t.Fatalf("CreateTx holds nothing back: %v", err)
	}
}

// flakyChain fails BlockHash while fail is set, as a btcd that times out.
type flakyChain struct {
	*fakeChain
	fail bool
}

func (c *flakyChain) BlockHash(ctx context.Context, h int32) (*chainhash.Hash, error) {
	if c.fail {
		return nil, errors.New("rpc timeout")
	}
	return c.fakeChain.BlockHash(ctx, h)
}

// A failed block-hash lookup is an error, not a reorg: the coins stay and
// nothing is rescanned (the wallet used to drop every coin and rescan from
// its birthday). A chain shorter than the last block scanned is a reorg.
func TestSyncErrorIsNotAReorg(t *testing.T) {
	ctx := context.Background()
	chain := &flakyChain{fakeChain: &fakeChain{}}
	w := minedWallet(t, chain, chain.fakeChain, 102)
	before := w.Balance()
	if before.Confirmed != 3*50*btcutil.SatoshiPerBitcoin {
		t.Fatalf("balance %+v", before)
	}
	chain.fail = true
	if err := w.Sync(ctx); err == nil || !strings.Contains(err.Error(), "rpc timeout") {
		t.Fatalf("sync with a failing chain: %v", err)
	}
	if b := w.Balance(); b != before || w.Height() != 101 {
		t.Fatalf("after a failed lookup: balance %+v at %d, want %+v at 101", b, w.Height(), before)
	}
	chain.fail = false
	if _, _, _, err := w.CreateTx([]Output{OpReturn([]byte("x"))}, 1000); err != nil {
		t.Fatal(err)
	}
	// A shorter chain: the wallet rescans what is left.
	chain.mu.Lock()
	chain.blocks = chain.blocks[:101]
	chain.mu.Unlock()
	if err := w.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if b := w.Balance(); w.Height() != 100 || b.Confirmed != 2*50*btcutil.SatoshiPerBitcoin {
		t.Fatalf("after a reorg to 100: balance %+v at %d", b, w.Height())
	}
}

// A new seed never replaces a seed file that appeared after Create looked
// (its coins would be lost with it): the file is linked into place, not
// renamed over it.
func TestNewSeedNeverOverwritesAnother(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wallet.json")
	if err := os.WriteFile(path, []byte("the other seed"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := encryptSeed(make([]byte, seedLen), []byte("pw"), params.Name, 10)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeSeedFile(path, f, false); !errors.Is(err, os.ErrExist) {
		t.Fatalf("writing a new seed over another: %v, want ErrExist", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "the other seed" {
		t.Fatalf("the other seed file now holds %q", b)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*")); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
	// Saving (replace) still works.
	if err := writeSeedFile(path, f, true); err != nil {
		t.Fatal(err)
	}
}

// minedWallet is a new wallet on chain, synced after blocks blocks whose
// coinbases pay it 50 BTC each (mined on fake, the chain under chain).
func minedWallet(t *testing.T, chain Chain, fake *fakeChain, blocks int) *Wallet {
	t.Helper()
	w, err := Create(filepath.Join(t.TempDir(), "wallet.json"), []byte("pw"), Config{Params: params, Chain: chain, ScryptLogN: 10})
	if err != nil {
		t.Fatal(err)
	}
	addr, err := w.NewAddress()
	if err != nil {
		t.Fatal(err)
	}
	script, _ := txscript.PayToAddrScript(addr)
	for range blocks {
		fake.mine(script, 50*btcutil.SatoshiPerBitcoin)
	}
	if err := w.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	return w
}

// forkingChain replaces the fake chain's blocks from height fork on with
// others the first time the wallet asks for the hash at height at: a reorg
// that lands while a Sync is part way through its scan.
type forkingChain struct {
	*fakeChain
	at, fork int32
	blocks   []*wire.MsgBlock // the other branch, from height fork on
	done     bool
}

func (c *forkingChain) BlockHash(ctx context.Context, h int32) (*chainhash.Hash, error) {
	if h == c.at && !c.done {
		c.done = true
		c.mu.Lock()
		c.fakeChain.blocks = append(c.fakeChain.blocks[:c.fork:c.fork], c.blocks...)
		c.mu.Unlock()
	}
	return c.fakeChain.BlockHash(ctx, h)
}

// A reorg during a Sync's scan (a block scanned from the old branch, the
// next from the new one) is noticed by the block's parent, and the wallet
// ends with the coins of the best chain. It used to keep the coin of the
// block reorganised out and never see the coin of the block that replaced
// it: the next Sync compared only the hash of the last block scanned,
// which was on the new branch.
func TestReorgDuringSyncIsNoticed(t *testing.T) {
	ctx := context.Background()
	seed := bytes.Repeat([]byte{7}, 32)
	fake := &fakeChain{}
	chain := &forkingChain{fakeChain: fake, at: 4, fork: 3}
	w, err := New(seed, Config{Params: params, Chain: chain})
	if err != nil {
		t.Fatal(err)
	}
	addr, err := w.NewAddress()
	if err != nil {
		t.Fatal(err)
	}
	mine, _ := txscript.PayToAddrScript(addr)
	other := payOut(t, 1).PkScript
	for range 3 {
		fake.mine(mine, 50*btcutil.SatoshiPerBitcoin)
	}
	if err := w.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// The old branch: 3 and 4 pay the wallet 1 BTC and 2 BTC.
	fake.mine(mine, 1*btcutil.SatoshiPerBitcoin)
	fake.mine(mine, 2*btcutil.SatoshiPerBitcoin)
	// The new branch: 3' pays someone else, 4' the wallet 4 BTC, 5' 8 BTC.
	alt := &fakeChain{blocks: append([]*wire.MsgBlock(nil), fake.blocks[:3]...)}
	alt.mine(other, 50*btcutil.SatoshiPerBitcoin)
	alt.mine(mine, 4*btcutil.SatoshiPerBitcoin)
	alt.mine(mine, 8*btcutil.SatoshiPerBitcoin)
	chain.blocks = alt.blocks[3:]
	for range 2 {
		if err := w.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if !chain.done {
		t.Fatal("the chain never forked")
	}
	fresh, err := New(seed, Config{Params: params, Chain: fake})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.NewAddress(); err != nil {
		t.Fatal(err)
	}
	if err := fresh.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	got, want := w.UTXOs(), fresh.UTXOs()
	if !slices.EqualFunc(got, want, func(a, b UTXO) bool { return a.OutPoint == b.OutPoint && a.Value == b.Value && a.Height == b.Height }) {
		t.Fatalf("after a reorg during a sync the wallet holds %s; the best chain gives %s", coinList(got), coinList(want))
	}
	if w.Height() != 5 {
		t.Fatalf("height %d, want 5", w.Height())
	}
}

func coinList(us []UTXO) string {
	var parts []string
	for _, u := range us {
		parts = append(parts, fmt.Sprintf("%v at %d", u.Value, u.Height))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// unlinkedChain serves a block at height bad whose parent is not the block
// below it, every time: a chain source that is wrong, not one in a reorg.
type unlinkedChain struct {
	*fakeChain
	bad   int32
	calls int
}

func (c *unlinkedChain) Block(ctx context.Context, hash *chainhash.Hash) (*wire.MsgBlock, error) {
	if c.calls++; c.calls > 100 {
		return nil, errors.New("the wallet keeps rescanning")
	}
	blk, err := c.fakeChain.Block(ctx, hash)
	if err != nil || blk.BlockHash() != c.fakeChain.blocks[c.bad].BlockHash() {
		return blk, err
	}
	b := *blk
	b.Header.PrevBlock = chainhash.Hash{1}
	return &b, nil
}

// A block that does not follow the one scanned before it restarts the scan
// once per Sync; the second time Sync fails, rather than rescanning for as
// long as the chain source serves such a block.
func TestSyncRestartsOnceOnUnlinkedBlocks(t *testing.T) {
	fake := &fakeChain{}
	chain := &unlinkedChain{fakeChain: fake, bad: 3}
	w, err := New(bytes.Repeat([]byte{7}, 32), Config{Params: params, Chain: chain})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		fake.mine(payOut(t, 1).PkScript, 50*btcutil.SatoshiPerBitcoin)
	}
	err = w.Sync(context.Background())
	if err == nil || !strings.Contains(err.Error(), "changed twice") {
		t.Fatalf("sync over a block that does not follow its parent: %v", err)
	}
}

// ChangePassword re-encrypts the seed under the new password, keeping the
// wallet (the same seed, counters and birthday); the old password no longer
// opens it; a second run (an interrupted change run again) finds it done;
// a wrong password writes nothing.
func TestChangePassword(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wallet.json")
	cfg := Config{Params: &chaincfg.RegressionNetParams, ScryptLogN: 4, Birthday: 7}
	w, err := Create(path, []byte("old password"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := w.NewAddress()
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	if err := ChangePassword(path, []byte("wrong"), []byte("new password"), 0); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("a wrong password: %v, want ErrWrongPassword", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatal("a wrong password rewrote the seed file")
	}
	for range 2 {
		if err := ChangePassword(path, []byte("old password"), []byte("new password"), 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Open(path, []byte("old password"), cfg); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("the old password after the change: %v", err)
	}
	w2, err := Open(path, []byte("new password"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	next, err := w2.NewAddress()
	if err != nil {
		t.Fatal(err)
	}
	if next.String() == addr.String() {
		t.Error("the address counter was not kept: the next address repeats the last one")
	}
	f, err := readSeedFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Birthday != 7 || f.LogN != 4 {
		t.Errorf("birthday %d, log_n %d; want 7 and 4 kept", f.Birthday, f.LogN)
	}
	seed, err := f.decrypt([]byte("new password"))
	if err != nil {
		t.Fatal(err)
	}
	same, err := New(seed, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if first, _ := same.NewAddress(); first.String() != addr.String() {
		t.Error("the seed changed")
	}
}
