package anchor

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/anchorchat/anchorchat/wallet"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/wire"
)

// bumpWallet replaces a transaction at the rate asked, recording it.
type bumpWallet struct {
	noWallet
	est   btcutil.Amount
	rates []btcutil.Amount
}

func (w *bumpWallet) FeeRate(context.Context) (btcutil.Amount, error) { return w.est, nil }
func (w *bumpWallet) BuildReplacement(tx *wire.MsgTx, rate btcutil.Amount) (*wire.MsgTx, btcutil.Amount, error) {
	w.rates = append(w.rates, rate)
	fee := wallet.FeeForVSize(rate, wallet.EstimateVSize(len(tx.TxIn), tx.TxOut))
	r := tx.Copy()
	r.TxOut[1].Value = 1_000_000 - int64(fee)
	return r, fee, nil
}

// A transaction that stays unconfirmed is bumped every BumpAfter, but its
// fee rate does not grow past twice the wallet's estimate (then by the
// BIP-125 minimum the wallet adds). It used to double at every bump: a day
// unconfirmed raised it 2^24 times, giving the whole change to miners.
func TestBumpStaysNearTheEstimate(t *testing.T) {
	ctx := context.Background()
	var root Hash
	root[0] = 6
	anchorTx := fixtureTx(root)
	anchorTx.TxOut[1].Value = 1_000_000
	chain := &reorgChain{blocks: map[int32]*wire.MsgBlock{1: chainBlock(1, nil)}, best: 1}
	now := time.Unix(1_800_000_000, 0)
	w := &bumpWallet{est: 10_000} // 10 sat/vB
	b, err := Open(ctx, Config{Path: filepath.Join(t.TempDir(), "anchor.db"), Wallet: w, Chain: chain, Signer: newKey(t),
		Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	vsize := wallet.EstimateVSize(len(anchorTx.TxIn), anchorTx.TxOut)
	insertBroadcastBatch(t, b, root, anchorTx, int64(wallet.FeeForVSize(w.est, vsize)), 1, now)
	for range 24 {
		now = now.Add(DefaultBumpAfter)
		if err := b.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(w.rates) != 24 {
		t.Fatalf("%d bumps in 24 rounds a BumpAfter apart, want 24", len(w.rates))
	}
	for i, r := range w.rates {
		if r > 2*w.est {
			t.Fatalf("bump %d asked for %d sat/kvB, more than twice the estimate %d (rates %v)", i+1, r, w.est, w.rates)
		}
	}
}

// A reorg that takes a batch's transaction out of the chain puts back in
// the mempool the version that was mined, and the next batch's
// transaction, which spent that version's change while it was confirmed.
// The batcher keeps that version (not a later bump of it, which was never
// mined) and does not replace it while another batch's transaction spends
// it: a replacement has another txid, so the spender's input would never
// exist again and that batch could never confirm. It used to bump at once
// after the reorg (the transaction had waited BumpAfter since its last
// broadcast), and to rebroadcast the latest bump instead of the mined
// version.
func TestBumpSparesATxAnotherBatchSpends(t *testing.T) {
	ctx := context.Background()
	var root1, root2 Hash
	root1[0], root2[0] = 1, 2
	v1 := fixtureTx(root1) // mined, then reorganised out
	v1.TxOut[1].Value = 1_000_000
	v2 := v1.Copy() // a bump of v1 that was never mined
	v2.TxOut[1].Value = 990_000
	child := fixtureTx(root2) // the next batch, spending v1's change
	child.TxIn[0].PreviousOutPoint = wire.OutPoint{Hash: v1.TxHash(), Index: 1}
	child.TxOut[1].Value = 1_000_000

	blocks := map[int32]*wire.MsgBlock{1: chainBlock(1, nil)}
	stale2 := chainBlock(1002, blocks[1], v1)
	blocks[2] = chainBlock(2, blocks[1])
	blocks[3] = chainBlock(3, blocks[2])
	chain := &reorgChain{blocks: blocks, stale: []*wire.MsgBlock{stale2}, best: 3}
	now := time.Unix(1_800_000_000, 0)
	w := &bumpWallet{est: 10_000}
	b, err := Open(ctx, Config{Path: filepath.Join(t.TempDir(), "anchor.db"), Wallet: w, Chain: chain, Signer: newKey(t),
		Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	then := now.Add(-2 * DefaultBumpAfter)
	insertBroadcastBatch(t, b, root1, v1, 1580, 1, then)
	var raw2 bytes.Buffer
	if err := v2.Serialize(&raw2); err != nil {
		t.Fatal(err)
	}
	stripped, _ := StrippedTx(v1)
	if _, err := b.db.ExecContext(ctx, `INSERT INTO batch_txs (txid, batch_id, raw_tx, fee, created_at) VALUES (?, 1, ?, 11580, ?)`,
		v2.TxHash().String(), raw2.Bytes(), then.Unix()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.db.ExecContext(ctx, `UPDATE batches SET state = 'mined', txid = ?, raw_tx = ?, fee = 11580, bumps = 1,
		block_hash = ?, height = 2, tx_index = 1, mined_tx = ?, mined_txid = ?, scan_height = 2 WHERE id = 1`,
		v2.TxHash().String(), raw2.Bytes(), stale2.BlockHash().String(), stripped, v1.TxHash().String()); err != nil {
		t.Fatal(err)
	}
	insertBroadcastBatch(t, b, root2, child, 1580, 2, then)

	for round := range 3 {
		if err := b.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		bs, err := b.Batches(ctx)
		if err != nil || len(bs) != 2 {
			t.Fatal(bs, err)
		}
		if bs[0].State != BatchBroadcast || bs[0].Txid != v1.TxHash().String() {
			t.Fatalf("round %d: batch 1 is %s with tx %s; want broadcast with the mined version %s (v2 %s), which batch 2 spends",
				round, bs[0].State, bs[0].Txid, v1.TxHash(), v2.TxHash())
		}
		now = now.Add(DefaultBumpAfter)
	}
}
