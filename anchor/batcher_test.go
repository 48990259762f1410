package anchor

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/anchorchat/anchorchat/wallet"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

// chainBlock makes a block on prev holding txs after a coinbase that nonce
// makes unique.
func chainBlock(nonce uint32, prev *wire.MsgBlock, txs ...*wire.MsgTx) *wire.MsgBlock {
	cb := wire.NewMsgTx(1)
	cb.AddTxIn(wire.NewTxIn(&wire.OutPoint{Index: wire.MaxPrevOutIndex}, []byte{0x02, byte(nonce), byte(nonce >> 8)}, nil))
	cb.AddTxOut(wire.NewTxOut(1, []byte{0x51}))
	all := append([]*wire.MsgTx{cb}, txs...)
	ids := make([]chainhash.Hash, len(all))
	for i, tx := range all {
		ids[i] = tx.TxHash()
	}
	blk := &wire.MsgBlock{Header: wire.BlockHeader{MerkleRoot: TxMerkleRoot(ids), Nonce: nonce}, Transactions: all}
	if prev != nil {
		blk.Header.PrevBlock = prev.BlockHash()
	}
	return blk
}

// insertBroadcastBatch stores a batch of root whose transaction tx is
// waiting to be mined, scanned up to height scan.
func insertBroadcastBatch(t *testing.T, b *Batcher, root Hash, tx *wire.MsgTx, fee int64, scan int32, at time.Time) {
	t.Helper()
	var raw bytes.Buffer
	if err := tx.Serialize(&raw); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := b.db.ExecContext(ctx, `INSERT INTO batches (root, leaf_count, state, created_at, scan_height, txid, raw_tx, fee, broadcast_at)
		VALUES (?, 1, 'broadcast', ?, ?, ?, ?, ?, ?)`, root[:], at.Unix(), scan, tx.TxHash().String(), raw.Bytes(), fee, at.Unix())
	if err != nil {
		t.Fatal(err)
	}
	id, _ := res.LastInsertId()
	if _, err := b.db.ExecContext(ctx, `INSERT INTO batch_txs (txid, batch_id, raw_tx, fee, created_at) VALUES (?, ?, ?, ?, ?)`,
		tx.TxHash().String(), id, raw.Bytes(), fee, at.Unix()); err != nil {
		t.Fatal(err)
	}
}

// brokeWallet has no coin to spend: every new anchor transaction fails.
type brokeWallet struct{ noWallet }

func (brokeWallet) CreateTxExcept([]wallet.Output, btcutil.Amount, []wire.OutPoint) (*wire.MsgTx, []wallet.Coin, btcutil.Amount, error) {
	return nil, nil, 0, errors.New("insufficient funds")
}

// A round whose new batch cannot be funded (the wallet is empty, or its
// coins are held by a batch not mined yet) still advances the batches it
// has: finding their transactions in blocks, bumping, attesting, which is
// what frees the coins. Tick used to return at the funding error, so a
// batch holding the only coin was never found mined (or bumped) while new
// claims waited: neither was ever anchored.
func TestTickAdvancesWhenANewBatchCannotBeFunded(t *testing.T) {
	ctx := context.Background()
	var root Hash
	root[0] = 5
	anchorTx := fixtureTx(root)
	blk := chainBlock(1, nil, anchorTx)
	now := time.Unix(1_800_000_000, 0)
	b, err := Open(ctx, Config{Path: filepath.Join(t.TempDir(), "anchor.db"), Wallet: brokeWallet{}, Chain: &oneBlockChain{blk: blk},
		Signer: newKey(t), Interval: time.Minute, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	insertBroadcastBatch(t, b, root, anchorTx, 1000, 0, now)
	if _, err := b.Submit(ctx, claim(t, newKey(t), "later")); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour) // the new claim is due

	if err := b.Tick(ctx); err == nil {
		t.Fatal("Tick: no error, want the funding failure reported")
	}
	bs, err := b.Batches(ctx)
	if err != nil || len(bs) != 1 {
		t.Fatal(bs, err)
	}
	if bs[0].State != BatchMined || bs[0].Height != 1 {
		t.Fatalf("batch after the round: %+v; its tx is in block 1, want it mined there", bs[0])
	}
}
