package anchor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/anchorchat/anchorchat/wallet"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// oneBlockChain serves a single block at height 1.
type oneBlockChain struct {
	wallet.Chain // unused methods
	blk          *wire.MsgBlock
}

func (c *oneBlockChain) BestHeight(context.Context) (int32, error) { return 1, nil }
func (c *oneBlockChain) BlockHash(context.Context, int32) (*chainhash.Hash, error) {
	h := c.blk.BlockHash()
	return &h, nil
}
func (c *oneBlockChain) Block(context.Context, *chainhash.Hash) (*wire.MsgBlock, error) {
	return c.blk, nil
}

type noWallet struct{}

func (noWallet) Sync(context.Context) error                      { return nil }
func (noWallet) FeeRate(context.Context) (btcutil.Amount, error) { return 0, nil }
func (noWallet) BuildReplacement(*wire.MsgTx, btcutil.Amount) (*wire.MsgTx, btcutil.Amount, error) {
	return nil, 0, nil
}
func (noWallet) CreateTxExcept([]wallet.Output, btcutil.Amount, []wire.OutPoint) (*wire.MsgTx, []wallet.Coin, btcutil.Amount, error) {
	return nil, nil, 0, nil
}

func opReturn(t *testing.T, data []byte) *wire.TxOut {
	t.Helper()
	s, err := txscript.NullDataScript(data)
	if err != nil {
		t.Fatal(err)
	}
	return wire.NewTxOut(0, s)
}

// A transaction carrying the batch's payload that no proof could use (here
// a copy with a second OP_RETURN, placed before the batch's own transaction
// in the block) is passed over: the scan records the usable one. Taking the
// copy left a batch whose every attestation verifiers refuse.
func TestScanSkipsUnusableCopies(t *testing.T) {
	var root Hash
	root[0], root[31] = 1, 2
	tx := func(outs ...*wire.TxOut) *wire.MsgTx {
		m := wire.NewMsgTx(2)
		m.AddTxIn(wire.NewTxIn(&wire.OutPoint{Index: uint32(len(outs))}, nil, nil))
		for _, o := range outs {
			m.AddTxOut(o)
		}
		return m
	}
	copyTx := tx(opReturn(t, Payload(root)), opReturn(t, []byte("and more")))
	ours := tx(opReturn(t, Payload(root)), wire.NewTxOut(1000, []byte{txscript.OP_TRUE}))
	chain := &oneBlockChain{blk: &wire.MsgBlock{Transactions: []*wire.MsgTx{copyTx, ours}}}
	b, err := Open(context.Background(), Config{Path: filepath.Join(t.TempDir(), "anchor.db"), Wallet: noWallet{}, Chain: chain, Signer: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r := &batchRow{id: 1, root: root}
	found, err := b.scan(context.Background(), r, 1)
	if err != nil || !found {
		t.Fatalf("scan: %v %v", found, err)
	}
	if r.txIndex.Int64 != 1 || r.minedTxid.String != ours.TxHash().String() {
		t.Fatalf("scan took tx %d (%s), want the usable one at 1 (%s)", r.txIndex.Int64, r.minedTxid.String, ours.TxHash())
	}
}

// reorgChain is a wallet.Chain over a fixed best chain, plus stale blocks
// that Block still serves (btcd keeps side-chain blocks). BlockHash fails
// below from, as if those heights were out of reach.
type reorgChain struct {
	wallet.Chain
	blocks map[int32]*wire.MsgBlock
	stale  []*wire.MsgBlock
	best   int32
	from   int32
}

func (c *reorgChain) BestHeight(context.Context) (int32, error) { return c.best, nil }
func (c *reorgChain) BlockHash(_ context.Context, h int32) (*chainhash.Hash, error) {
	blk := c.blocks[h]
	if blk == nil || h < c.from {
		return nil, fmt.Errorf("no block at height %d", h)
	}
	hash := blk.BlockHash()
	return &hash, nil
}
func (c *reorgChain) Block(_ context.Context, hash *chainhash.Hash) (*wire.MsgBlock, error) {
	for _, blk := range c.blocks {
		if blk.BlockHash() == *hash {
			return blk, nil
		}
	}
	for _, blk := range c.stale {
		if blk.BlockHash() == *hash {
			return blk, nil
		}
	}
	return nil, errors.New("no block")
}
func (c *reorgChain) Broadcast(context.Context, *wire.MsgTx) (*chainhash.Hash, error) {
	return nil, errors.New("transaction already exists")
}

// A reorg that forks below the batch's block can confirm the same anchor
// transaction (it was in the mempool all along) LOWER on the new branch.
// The batcher rescans from the fork point: found by walking the stale
// branch back to the best chain when the chain source still has its
// blocks (here no height below the fork can be read, so only the walk
// works), else from ReorgWatchDepth below the old height. It used to
// restart at the old height minus one, never saw the transaction, and the
// batch stayed 'broadcast' forever (RBF cannot replace a confirmed tx).
func TestReorgRescansFromTheForkPoint(t *testing.T) {
	ctx := context.Background()
	var root Hash
	root[0] = 7
	anchorTx := fixtureTx(root)
	// The best chain: the tx is in block 9, on a branch forking at 8.
	blocks := map[int32]*wire.MsgBlock{}
	for h := int32(1); h <= 12; h++ {
		var txs []*wire.MsgTx
		if h == 9 {
			txs = append(txs, anchorTx)
		}
		blocks[h] = chainBlock(uint32(h), blocks[h-1], txs...)
	}
	// The old branch: 8, stale9, stale10 with the tx.
	stale9 := chainBlock(1009, blocks[8])
	stale10 := chainBlock(1010, stale9, anchorTx)

	for name, chain := range map[string]*reorgChain{
		"stale branch unknown": {blocks: blocks, best: 12},
		"stale branch known":   {blocks: blocks, best: 12, stale: []*wire.MsgBlock{stale9, stale10}, from: 8},
	} {
		now := time.Unix(1_800_000_000, 0)
		b, err := Open(ctx, Config{Path: filepath.Join(t.TempDir(), "anchor.db"), Wallet: noWallet{}, Chain: chain, Signer: newKey(t),
			Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		var raw bytes.Buffer
		anchorTx.Serialize(&raw)
		stripped, _ := StrippedTx(anchorTx)
		if _, err := b.db.ExecContext(ctx, `INSERT INTO batches (root, leaf_count, state, created_at, scan_height, txid, raw_tx, fee, broadcast_at,
			block_hash, height, tx_index, mined_tx, mined_txid) VALUES (?, 1, 'mined', ?, 10, ?, ?, 1000, ?, ?, 10, 1, ?, ?)`,
			root[:], now.Unix(), anchorTx.TxHash().String(), raw.Bytes(), now.Unix(), stale10.BlockHash().String(), stripped,
			anchorTx.TxHash().String()); err != nil {
			t.Fatal(err)
		}
		if err := b.advance(ctx); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		rs, err := b.loadBatches(ctx, "")
		if err != nil || len(rs) != 1 {
			t.Fatal(rs, err)
		}
		if rs[0].state == BatchBroadcast || rs[0].height.Int64 != 9 || rs[0].blockHash.String != blocks[9].BlockHash().String() {
			t.Fatalf("%s: after the reorg the batch is %s (height %d, scanned to %d); its tx is confirmed at height 9 of the best chain",
				name, rs[0].state, rs[0].height.Int64, rs[0].scan)
		}
	}
}

// A reorg below the height a waiting batch was scanned to can mine its
// transaction on the new branch at a height already scanned (it was in
// neither old block). The scan notices that the block it stopped at left
// the best chain and goes back to the fork point; it used to go on from
// the old height, never saw the transaction, and the batch stayed
// 'broadcast' forever (its claims never attested, its coins held).
func TestScanFollowsAReorgBelowItsHeight(t *testing.T) {
	ctx := context.Background()
	var root Hash
	root[0] = 9
	anchorTx := fixtureTx(root)
	old := map[int32]*wire.MsgBlock{}
	for h := int32(1); h <= 10; h++ {
		old[h] = chainBlock(uint32(h), old[h-1])
	}
	// The new best chain forks at 8 and mines the tx at 9.
	best := map[int32]*wire.MsgBlock{}
	for h := int32(1); h <= 12; h++ {
		var txs []*wire.MsgTx
		if h == 9 {
			txs = append(txs, anchorTx)
		}
		if h <= 8 {
			best[h] = old[h]
		} else {
			best[h] = chainBlock(uint32(1000+h), best[h-1], txs...)
		}
	}
	chain := &reorgChain{blocks: old, best: 10}
	now := time.Unix(1_800_000_000, 0)
	b, err := Open(ctx, Config{Path: filepath.Join(t.TempDir(), "anchor.db"), Wallet: noWallet{}, Chain: chain, Signer: newKey(t),
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	insertBroadcastBatch(t, b, root, anchorTx, 1000, 8, now)
	if err := b.advance(ctx); err != nil {
		t.Fatal(err)
	}
	if rs, err := b.loadBatches(ctx, ""); err != nil || len(rs) != 1 || rs[0].state != BatchBroadcast || rs[0].scan != 10 {
		t.Fatalf("before the reorg: %+v %v; want broadcast, scanned to 10", rs, err)
	}

	chain.blocks, chain.stale, chain.best = best, []*wire.MsgBlock{old[9], old[10]}, 12
	if err := b.advance(ctx); err != nil {
		t.Fatal(err)
	}
	rs, err := b.loadBatches(ctx, "")
	if err != nil || len(rs) != 1 {
		t.Fatal(rs, err)
	}
	if rs[0].state != BatchMined || rs[0].height.Int64 != 9 || rs[0].blockHash.String != best[9].BlockHash().String() {
		t.Fatalf("after the reorg the batch is %s (height %d, scanned to %d); its tx is at height 9 of the best chain",
			rs[0].state, rs[0].height.Int64, rs[0].scan)
	}
}
