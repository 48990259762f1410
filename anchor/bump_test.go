package anchor

import (
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
