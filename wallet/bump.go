package wallet

import (
	"context"
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/wire"
)

// MinRelayFeeRate is the relay fee rate a replacement must add on top of the
// fee it replaces (BIP-125 rule 4), in sat/kvB: btcd's default 1 sat/vB.
const MinRelayFeeRate btcutil.Amount = 1000

// ErrCannotBump: the transaction cannot be replaced by the wallet alone.
var ErrCannotBump = errors.New("wallet: cannot fee-bump transaction")

// BuildReplacement builds and signs (does not broadcast) a BIP-125
// replacement of tx, a transaction this wallet made and signed: the same
// inputs and the same non-change outputs, with the change output reduced so
// that the replacement pays at least feeRate (sat/kvB) and at least the old
// fee plus MinRelayFeeRate times its size. Change that would fall below
// DustLimit is dropped (it goes to the fee). It returns the replacement and
// its fee. Call Sync first so the wallet knows tx's inputs.
func (w *Wallet) BuildReplacement(tx *wire.MsgTx, feeRate btcutil.Amount) (*wire.MsgTx, btcutil.Amount, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buildReplacementLocked(tx, feeRate)
}

func (w *Wallet) buildReplacementLocked(tx *wire.MsgTx, feeRate btcutil.Amount) (*wire.MsgTx, btcutil.Amount, error) {
	if len(tx.TxIn) == 0 {
		return nil, 0, fmt.Errorf("%w: no inputs", ErrCannotBump)
	}
	prevs := make([]Coin, len(tx.TxIn))
	keys := make([]*btcec.PrivateKey, len(tx.TxIn))
	var in btcutil.Amount
	for i, txin := range tx.TxIn {
		u := w.utxos[txin.PreviousOutPoint]
		if u == nil {
			return nil, 0, fmt.Errorf("%w: input %d (%s) is not an unspent output of this wallet (already confirmed, or not ours)", ErrCannotBump, i, txin.PreviousOutPoint)
		}
		if txin.Sequence >= wire.MaxTxInSequenceNum-1 {
			return nil, 0, fmt.Errorf("%w: input %d does not signal replaceability", ErrCannotBump, i)
		}
		prevs[i] = u.Coin
		in += u.Value
		k, err := w.privKey(keyRef{u.Branch, u.Index})
		if err != nil {
			return nil, 0, err
		}
		keys[i] = k
	}
	var out btcutil.Amount
	change := -1
	for i, o := range tx.TxOut {
		out += btcutil.Amount(o.Value)
		if _, ok := w.scripts[string(o.PkScript)]; ok && change < 0 {
			change = i
		}
	}
	oldFee := in - out
	if change < 0 {
		return nil, 0, fmt.Errorf("%w: no change output to take the extra fee from", ErrCannotBump)
	}
	r := tx.Copy()
	for _, txin := range r.TxIn {
		txin.Witness = nil
		txin.SignatureScript = nil
	}
	vsize := EstimateVSize(len(r.TxIn), r.TxOut)
	newFee := max(FeeForVSize(feeRate, vsize), oldFee+FeeForVSize(MinRelayFeeRate, vsize))
	newChange := btcutil.Amount(r.TxOut[change].Value) - (newFee - oldFee)
	switch {
	case newChange >= DustLimit:
		r.TxOut[change].Value = int64(newChange)
	case newChange >= 0 && len(r.TxOut) > 1:
		r.TxOut = append(r.TxOut[:change], r.TxOut[change+1:]...)
		newFee += newChange
	default:
		return nil, 0, fmt.Errorf("%w: change of %d sat cannot pay %d sat more fee", ErrCannotBump, r.TxOut[change].Value, int64(newFee-oldFee))
	}
	if err := SignP2WPKH(r, prevs, keys); err != nil {
		return nil, 0, err
	}
	return r, newFee, nil
}

// BumpFee syncs, builds a replacement of tx (BuildReplacement) and
// broadcasts it. It returns the replacement and its fee.
func (w *Wallet) BumpFee(ctx context.Context, tx *wire.MsgTx, feeRate btcutil.Amount) (*wire.MsgTx, btcutil.Amount, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.syncLocked(ctx); err != nil {
		return nil, 0, err
	}
	r, fee, err := w.buildReplacementLocked(tx, feeRate)
	if err != nil {
		return nil, 0, err
	}
	txid, err := w.cfg.Chain.Broadcast(ctx, r)
	if err != nil {
		return nil, 0, fmt.Errorf("wallet: broadcast replacement: %w", err)
	}
	if err := w.syncLocked(ctx); err != nil {
		return nil, 0, err
	}
	w.log.Info("replaced transaction", "old_txid", tx.TxHash(), "txid", txid, "fee_sat", int64(fee))
	return r, fee, nil
}
