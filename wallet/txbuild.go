package wallet

import (
	"errors"
	"fmt"
	"sort"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// Sizes used by the fee estimate, in weight units (WU); vsize = ceil(WU/4).
const (
	// txOverheadWU: version (4) + locktime (4) at 4 WU/byte, plus the
	// segwit marker and flag (2 WU). Input/output count varints are added
	// separately.
	txOverheadWU = 8*4 + 2
	// p2wpkhInputWU: outpoint (36) + empty script varint (1) + sequence (4)
	// = 41 bytes * 4, plus the witness: item count (1) + sig push (1 + 73,
	// the largest DER signature with its sighash byte) + pubkey push (1 + 33)
	// = 109 WU.
	p2wpkhInputWU = 41*4 + 109
	// P2WPKHScriptLen is the length of a P2WPKH output script.
	P2WPKHScriptLen = 22

	// DustLimit is the smallest change output the wallet creates; smaller
	// change is left to the fee. 546 sat is dust-safe for every standard
	// output type at the default relay fee.
	DustLimit btcutil.Amount = 546
	// MaxDataLen is btcd's standardness limit for OP_RETURN data.
	MaxDataLen = txscript.MaxDataCarrierSize // 80
)

// ErrInsufficientFunds is matched (errors.Is) by every
// *InsufficientFundsError.
var ErrInsufficientFunds = errors.New("insufficient funds")

// InsufficientFundsError says how much the wallet has and needs.
type InsufficientFundsError struct {
	Have btcutil.Amount // total value of the spendable coins
	Need btcutil.Amount // outputs plus the fee of spending all of them
}

func (e *InsufficientFundsError) Error() string {
	return fmt.Sprintf("wallet: insufficient funds: have %d sat (%v), need %d sat (%v) for outputs and fee",
		int64(e.Have), e.Have, int64(e.Need), e.Need)
}

// Is makes errors.Is(err, ErrInsufficientFunds) true.
func (e *InsufficientFundsError) Is(target error) bool { return target == ErrInsufficientFunds }

// Output is one output of a transaction to build: either a payment
// (Address, Amount) or, with Data set, a zero-value OP_RETURN carrying Data
// (at most MaxDataLen bytes; at most one per transaction).
type Output struct {
	Address btcutil.Address
	Amount  btcutil.Amount
	Data    []byte
}

// PayTo is a payment output.
func PayTo(addr btcutil.Address, amt btcutil.Amount) Output {
	return Output{Address: addr, Amount: amt}
}

// OpReturn is a data output.
func OpReturn(data []byte) Output { return Output{Data: data} }

// txOut turns an Output into a wire.TxOut, checking it.
func (o Output) txOut() (*wire.TxOut, error) {
	if o.Data != nil {
		if o.Address != nil || o.Amount != 0 {
			return nil, errors.New("wallet: an OP_RETURN output carries data only (no address, zero amount)")
		}
		if len(o.Data) > MaxDataLen {
			return nil, fmt.Errorf("wallet: OP_RETURN data is %d bytes, the limit is %d", len(o.Data), MaxDataLen)
		}
		script, err := txscript.NullDataScript(o.Data)
		if err != nil {
			return nil, fmt.Errorf("wallet: OP_RETURN script: %w", err)
		}
		return wire.NewTxOut(0, script), nil
	}
	if o.Address == nil {
		return nil, errors.New("wallet: output without address or data")
	}
	script, err := txscript.PayToAddrScript(o.Address)
	if err != nil {
		return nil, fmt.Errorf("wallet: output script for %s: %w", o.Address, err)
	}
	out := wire.NewTxOut(int64(o.Amount), script)
	if o.Amount <= 0 || o.Amount < DustLimit {
		return nil, fmt.Errorf("wallet: output of %d sat to %s is below the dust limit %d", int64(o.Amount), o.Address, int64(DustLimit))
	}
	return out, nil
}

// Coin is a spendable P2WPKH output.
type Coin struct {
	OutPoint wire.OutPoint
	Value    btcutil.Amount
	PkScript []byte
}

// Selection is the result of coin selection.
type Selection struct {
	Inputs []Coin
	Change btcutil.Amount // 0: no change output
	Fee    btcutil.Amount
	VSize  int64 // estimated virtual size of the signed transaction
}

func varIntLen(n int) int64 { return int64(wire.VarIntSerializeSize(uint64(n))) }

// EstimateVSize estimates the virtual size of a signed transaction spending
// nInputs P2WPKH coins to outs. It never underestimates: the estimate
// assumes 73-byte signatures; real ones are 71-73 bytes.
func EstimateVSize(nInputs int, outs []*wire.TxOut) int64 {
	w := int64(txOverheadWU)
	w += 4 * (varIntLen(nInputs) + varIntLen(len(outs)))
	w += int64(nInputs) * p2wpkhInputWU
	for _, o := range outs {
		w += 4 * (8 + varIntLen(len(o.PkScript)) + int64(len(o.PkScript)))
	}
	return (w + 3) / 4
}

// FeeForVSize is feeRate (sat per 1000 vbytes) times vsize, rounded up.
func FeeForVSize(feeRate btcutil.Amount, vsize int64) btcutil.Amount {
	return btcutil.Amount((int64(feeRate)*vsize + 999) / 1000)
}

// SelectCoins picks inputs for outs at feeRate (sat/kvB). changeScript is the
// script of the change output if one is needed.
//
// Strategy: first a single coin that pays outputs and fee exactly (leftover
// below DustLimit, which goes to the fee) is preferred, the one wasting
// least; otherwise coins are taken largest first until outputs and fee are
// covered. Change below DustLimit is dropped and adds to the fee.
func SelectCoins(coins []Coin, outs []*wire.TxOut, feeRate btcutil.Amount, changeScript []byte) (Selection, error) {
	var target btcutil.Amount
	for _, o := range outs {
		target += btcutil.Amount(o.Value)
	}
	withChange := append(append([]*wire.TxOut(nil), outs...), wire.NewTxOut(0, changeScript))

	// 1. Exact match: one coin, no change.
	best := -1
	var bestWaste btcutil.Amount
	for i, c := range coins {
		fee := FeeForVSize(feeRate, EstimateVSize(1, outs))
		waste := c.Value - target - fee
		if waste >= 0 && waste < DustLimit && (best < 0 || waste < bestWaste) {
			best, bestWaste = i, waste
		}
	}
	if best >= 0 {
		c := coins[best]
		return Selection{
			Inputs: []Coin{c},
			Fee:    c.Value - target,
			VSize:  EstimateVSize(1, outs),
		}, nil
	}

	// 2. Largest first.
	sorted := append([]Coin(nil), coins...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Value > sorted[j].Value })
	var total btcutil.Amount
	for n := 1; n <= len(sorted); n++ {
		total += sorted[n-1].Value
		vsChange := EstimateVSize(n, withChange)
		feeChange := FeeForVSize(feeRate, vsChange)
		if change := total - target - feeChange; change >= DustLimit {
			return Selection{Inputs: sorted[:n:n], Change: change, Fee: feeChange, VSize: vsChange}, nil
		}
		vsNo := EstimateVSize(n, outs)
		if feeNo := FeeForVSize(feeRate, vsNo); total >= target+feeNo {
			// Leftover is below the dust limit (else the branch above
			// would have taken it): it goes to the fee.
			return Selection{Inputs: sorted[:n:n], Fee: total - target, VSize: vsNo}, nil
		}
	}
	return Selection{}, &InsufficientFundsError{
		Have: total,
		Need: target + FeeForVSize(feeRate, EstimateVSize(len(coins), outs)),
	}
}

// BuildTx assembles an unsigned transaction from a selection: inputs in
// selection order, then outs, then the change output (if any) last.
func BuildTx(sel Selection, outs []*wire.TxOut, changeScript []byte) *wire.MsgTx {
	tx := wire.NewMsgTx(2)
	for _, c := range sel.Inputs {
		in := wire.NewTxIn(&c.OutPoint, nil, nil)
		in.Sequence = wire.MaxTxInSequenceNum - 2 // opt-in RBF, no locktime use
		tx.AddTxIn(in)
	}
	for _, o := range outs {
		tx.AddTxOut(o)
	}
	if sel.Change > 0 {
		tx.AddTxOut(wire.NewTxOut(int64(sel.Change), changeScript))
	}
	return tx
}

// SignP2WPKH signs every input of tx; prevs[i] is the coin spent by input i
// and keys[i] its private key.
func SignP2WPKH(tx *wire.MsgTx, prevs []Coin, keys []*btcec.PrivateKey) error {
	if len(prevs) != len(tx.TxIn) || len(keys) != len(tx.TxIn) {
		return errors.New("wallet: sign: inputs, coins and keys differ in number")
	}
	fetcher := PrevOutFetcher(prevs)
	hashes := txscript.NewTxSigHashes(tx, fetcher)
	for i, c := range prevs {
		wit, err := txscript.WitnessSignature(tx, hashes, i, int64(c.Value), c.PkScript, txscript.SigHashAll, keys[i], true)
		if err != nil {
			return fmt.Errorf("wallet: sign input %d: %w", i, err)
		}
		tx.TxIn[i].Witness = wit
	}
	return nil
}

// PrevOutFetcher returns a txscript.PrevOutputFetcher over coins.
func PrevOutFetcher(coins []Coin) *txscript.MultiPrevOutFetcher {
	f := txscript.NewMultiPrevOutFetcher(nil)
	for _, c := range coins {
		f.AddPrevOut(c.OutPoint, wire.NewTxOut(int64(c.Value), c.PkScript))
	}
	return f
}

// VerifyTx runs every input of tx through btcd's script engine.
func VerifyTx(tx *wire.MsgTx, prevs []Coin) error {
	fetcher := PrevOutFetcher(prevs)
	hashes := txscript.NewTxSigHashes(tx, fetcher)
	for i, c := range prevs {
		vm, err := txscript.NewEngine(c.PkScript, tx, i, txscript.StandardVerifyFlags, nil, hashes, int64(c.Value), fetcher)
		if err != nil {
			return fmt.Errorf("wallet: script engine input %d: %w", i, err)
		}
		if err := vm.Execute(); err != nil {
			return fmt.Errorf("wallet: script check input %d: %w", i, err)
		}
	}
	return nil
}
