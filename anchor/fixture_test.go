package anchor

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"

	"github.com/anchorchat/anchorchat/wallet"
)

// memChain is an in-memory ChainSource: no I/O.
type memChain struct {
	headers map[chainhash.Hash]*wire.BlockHeader
	byH     map[int32]chainhash.Hash
	best    int32
}

func (m *memChain) BlockHeader(_ context.Context, h *chainhash.Hash) (*wire.BlockHeader, error) {
	if hd := m.headers[*h]; hd != nil {
		return hd, nil
	}
	return nil, fmt.Errorf("no block %s: %w", h, ErrNotInChain)
}

func (m *memChain) BlockHash(_ context.Context, height int32) (*chainhash.Hash, error) {
	if h, ok := m.byH[height]; ok {
		return &h, nil
	}
	return nil, fmt.Errorf("no block at %d: %w", height, ErrNotInChain)
}

func (m *memChain) BestHeight(context.Context) (int32, error) { return m.best, nil }

// fixtureTx is a deterministic anchor transaction committing root: one
// input (prevout 0x11…11:0, RBF sequence), the OP_RETURN, a P2WPKH change
// output of 99,000 sat to hash160 0x22…22; no witness (a proof carries the
// stripped form).
func fixtureTx(root Hash) *wire.MsgTx {
	tx := wire.NewMsgTx(2)
	var prev chainhash.Hash
	for i := range prev {
		prev[i] = 0x11
	}
	in := wire.NewTxIn(&wire.OutPoint{Hash: prev, Index: 0}, nil, nil)
	in.Sequence = wire.MaxTxInSequenceNum - 2
	tx.AddTxIn(in)
	op := append([]byte{0x6a, byte(PayloadLen)}, Payload(root)...)
	tx.AddTxOut(wire.NewTxOut(0, op))
	tx.AddTxOut(wire.NewTxOut(99_000, append([]byte{0x00, 0x14}, bytes.Repeat([]byte{0x22}, 20)...)))
	return tx
}

// fixtureBlock puts anchor at position 1 of a 3-transaction block at
// height, with fixed header fields, into a memChain whose tip is
// height+confs-1.
func fixtureBlock(anchor *wire.MsgTx, height, confs int32) (*memChain, *wire.MsgBlock) {
	cb := wire.NewMsgTx(1)
	cb.AddTxIn(wire.NewTxIn(&wire.OutPoint{Index: wire.MaxPrevOutIndex}, []byte{0x03, byte(height), byte(height >> 8), byte(height >> 16)}, nil))
	cb.AddTxOut(wire.NewTxOut(312_500_000, []byte{0x51}))
	other := wire.NewMsgTx(2)
	other.AddTxIn(wire.NewTxIn(&wire.OutPoint{Hash: chainhash.Hash{0x33}, Index: 1}, nil, nil))
	other.AddTxOut(wire.NewTxOut(5000, []byte{0x51}))
	txs := []*wire.MsgTx{cb, anchor, other}
	ids := make([]chainhash.Hash, len(txs))
	for i, tx := range txs {
		ids[i] = tx.TxHash()
	}
	hdr := wire.BlockHeader{Version: 0x20000000, PrevBlock: chainhash.Hash{0x44}, MerkleRoot: TxMerkleRoot(ids),
		Bits: 0x207fffff, Nonce: 7}
	hdr.Timestamp = time.Unix(1767484800, 0) // 2026-01-04T00:00:00Z
	blk := &wire.MsgBlock{Header: hdr, Transactions: txs}
	h := hdr.BlockHash()
	m := &memChain{headers: map[chainhash.Hash]*wire.BlockHeader{h: &blk.Header}, byH: map[int32]chainhash.Hash{height: h}, best: height + confs - 1}
	return m, blk
}

// fixtureProof builds the proof of leaf i of tree in blk (anchor at
// position 1).
func fixtureProof(tree *Tree, ids [][32]byte, i int, blk *wire.MsgBlock, height int32) *Proof {
	txids := make([]chainhash.Hash, len(blk.Transactions))
	for k, tx := range blk.Transactions {
		txids[k] = tx.TxHash()
	}
	br, _ := BuildTxBranch(txids, 1)
	raw, _ := StrippedTx(blk.Transactions[1])
	return &Proof{ClaimID: ids[i], LeafIndex: uint32(i), LeafCount: uint32(tree.Len()), Path: tree.Path(i),
		Txid: txids[1], RawTx: raw, TxIndex: 1, Branch: br, BlockHash: blk.Header.BlockHash(), Height: uint32(height)}
}

// signedAnchorVSize is the virtual size of a real signed anchor
// transaction from the wallet's builder: one P2WPKH input, the OP_RETURN,
// P2WPKH change.
func signedAnchorVSize(t testing.TB) int64 {
	key, _ := btcec.NewPrivateKey()
	pkh := btcutil.Hash160(key.PubKey().SerializeCompressed())
	script := append([]byte{0x00, 0x14}, pkh...)
	coin := wallet.Coin{OutPoint: wire.OutPoint{Hash: chainhash.Hash{1}}, Value: 1_000_000, PkScript: script}
	op := append([]byte{0x6a, byte(PayloadLen)}, Payload(Hash{})...)
	sel := wallet.Selection{Inputs: []wallet.Coin{coin}, Change: 900_000}
	tx := wallet.BuildTx(sel, []*wire.TxOut{wire.NewTxOut(0, op)}, script)
	if err := wallet.SignP2WPKH(tx, sel.Inputs, []*btcec.PrivateKey{key}); err != nil {
		t.Fatal(err)
	}
	w := blockchain.GetTransactionWeight(btcutil.NewTx(tx))
	return (w + 3) / 4
}
