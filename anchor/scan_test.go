package anchor

import (
	"context"
	"path/filepath"
	"testing"

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
func (noWallet) CreateTx([]wallet.Output, btcutil.Amount) (*wire.MsgTx, []wallet.Coin, btcutil.Amount, error) {
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
