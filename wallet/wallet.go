// Package wallet is a small on-chain wallet on btcd/btcutil: a BIP-32 seed
// kept encrypted at rest, BIP-84 P2WPKH addresses, UTXO discovery by scanning
// blocks from a birthday height over a Chain (btcd RPC), coin selection, fee
// estimation with a floor, signing, broadcasting, and OP_RETURN data outputs
// for anchoring.
//
// The UTXO set is kept in memory and rebuilt by Sync from the birthday height
// when a wallet is opened; a reorganisation below the scanned tip triggers a
// rescan from the birthday. That suits regtest and a node that anchors now
// and then; it is not meant for a wallet with years of history.
package wallet

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"sync"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

const (
	// DefaultFeeFloor is the lowest fee rate used, in sat per 1000 vbytes
	// (2 sat/vB; btcd relays from 1 sat/vB).
	DefaultFeeFloor btcutil.Amount = 2000
	// DefaultLookahead is how many unused addresses per branch are watched.
	DefaultLookahead = 20
	// DefaultConfTarget is the confirmation target given to the estimator.
	DefaultConfTarget = 6

	branchExternal = 0
	branchInternal = 1
)

// Config configures a wallet.
type Config struct {
	Params     *chaincfg.Params // required
	Chain      Chain            // required for Sync, FeeRate and Send
	FeeFloor   btcutil.Amount   // sat/kvB; 0 means DefaultFeeFloor
	ConfTarget int              // 0 means DefaultConfTarget
	Lookahead  int              // 0 means DefaultLookahead
	Birthday   int32            // first block height to scan (Create only)
	ScryptLogN uint8            // 0 means DefaultLogN (Create only)
	Logger     *slog.Logger     // nil means slog.Default()
}

// UTXO is an output the wallet controls.
type UTXO struct {
	Coin
	Height   int32 // -1 while unconfirmed
	Coinbase bool
	Branch   uint32
	Index    uint32
}

// Balance is the wallet's balance.
type Balance struct {
	// Confirmed is spendable now: confirmed, mature, not spent by a
	// mempool transaction.
	Confirmed btcutil.Amount
	// Unconfirmed is what mempool transactions pay to the wallet.
	Unconfirmed btcutil.Amount
	// Immature is coinbase value not yet past coinbase maturity.
	Immature btcutil.Amount
}

type keyRef struct{ branch, index uint32 }

// Wallet is safe for concurrent use.
type Wallet struct {
	mu      sync.Mutex
	cfg     Config
	log     *slog.Logger
	path    string // "" for a wallet made by New: counters are not saved
	file    *seedFile
	account *hdkeychain.ExtendedKey
	scripts map[string]keyRef
	derived [2]uint32 // addresses derived per branch

	tipHeight int32 // last scanned height; birthday-1 before the first scan
	tipHash   chainhash.Hash
	utxos     map[wire.OutPoint]*UTXO
	memUTXOs  map[wire.OutPoint]*UTXO
	memSpent  map[wire.OutPoint]bool
}

// Create makes a new wallet with a random seed and writes its seed file,
// encrypted with password, to path (which must not exist).
func Create(path string, password []byte, cfg Config) (*Wallet, error) {
	if _, err := os.Stat(path); err == nil {
		return nil, fmt.Errorf("wallet: %s: %w", path, os.ErrExist)
	}
	if cfg.Params == nil {
		return nil, errors.New("wallet: Config.Params is required")
	}
	seed := make([]byte, seedLen)
	if _, err := rand.Read(seed); err != nil {
		return nil, fmt.Errorf("wallet: random seed: %w", err)
	}
	logN := cfg.ScryptLogN
	if logN == 0 {
		logN = DefaultLogN
	}
	f, err := encryptSeed(seed, password, cfg.Params.Name, logN)
	if err != nil {
		return nil, err
	}
	f.Birthday = cfg.Birthday
	if err := writeSeedFile(path, f, false); err != nil {
		return nil, err
	}
	return newWallet(seed, f, path, cfg)
}

// Open decrypts the seed file at path.
func Open(path string, password []byte, cfg Config) (*Wallet, error) {
	if cfg.Params == nil {
		return nil, errors.New("wallet: Config.Params is required")
	}
	f, err := readSeedFile(path)
	if err != nil {
		return nil, err
	}
	if f.Network != cfg.Params.Name {
		return nil, fmt.Errorf("wallet: seed file is for network %q, not %q", f.Network, cfg.Params.Name)
	}
	seed, err := f.decrypt(password)
	if err != nil {
		return nil, err
	}
	return newWallet(seed, f, path, cfg)
}

// New makes a wallet from a seed without a file (tests, tools).
func New(seed []byte, cfg Config) (*Wallet, error) {
	if cfg.Params == nil {
		return nil, errors.New("wallet: Config.Params is required")
	}
	return newWallet(seed, &seedFile{Network: cfg.Params.Name, Birthday: cfg.Birthday}, "", cfg)
}

func newWallet(seed []byte, f *seedFile, path string, cfg Config) (*Wallet, error) {
	if cfg.FeeFloor == 0 {
		cfg.FeeFloor = DefaultFeeFloor
	}
	if cfg.ConfTarget == 0 {
		cfg.ConfTarget = DefaultConfTarget
	}
	if cfg.Lookahead == 0 {
		cfg.Lookahead = DefaultLookahead
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	master, err := hdkeychain.NewMaster(seed, cfg.Params)
	if err != nil {
		return nil, fmt.Errorf("wallet: master key: %w", err)
	}
	// BIP-84 account 0: m/84'/coin'/0'.
	acct := master
	for _, i := range []uint32{84, cfg.Params.HDCoinType, 0} {
		if acct, err = acct.Derive(hdkeychain.HardenedKeyStart + i); err != nil {
			return nil, fmt.Errorf("wallet: derive account: %w", err)
		}
	}
	w := &Wallet{
		cfg: cfg, log: log.With("component", "wallet"), path: path, file: f, account: acct,
		scripts:   make(map[string]keyRef),
		tipHeight: f.Birthday - 1,
		utxos:     make(map[wire.OutPoint]*UTXO),
		memUTXOs:  make(map[wire.OutPoint]*UTXO),
		memSpent:  make(map[wire.OutPoint]bool),
	}
	if err := w.extendLookahead(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Wallet) next(branch uint32) uint32 {
	if branch == branchExternal {
		return w.file.NextExt
	}
	return w.file.NextInt
}

// extendLookahead derives and watches addresses up to next+Lookahead on both
// branches.
func (w *Wallet) extendLookahead() error {
	for b := uint32(0); b < 2; b++ {
		for w.derived[b] < w.next(b)+uint32(w.cfg.Lookahead) {
			script, _, err := w.scriptAt(b, w.derived[b])
			if err != nil {
				return err
			}
			w.scripts[string(script)] = keyRef{b, w.derived[b]}
			w.derived[b]++
		}
	}
	return nil
}

func (w *Wallet) keyAt(branch, index uint32) (*hdkeychain.ExtendedKey, error) {
	k, err := w.account.Derive(branch)
	if err != nil {
		return nil, fmt.Errorf("wallet: derive branch %d: %w", branch, err)
	}
	k, err = k.Derive(index)
	if err != nil {
		return nil, fmt.Errorf("wallet: derive %d/%d: %w", branch, index, err)
	}
	return k, nil
}

func (w *Wallet) scriptAt(branch, index uint32) ([]byte, btcutil.Address, error) {
	k, err := w.keyAt(branch, index)
	if err != nil {
		return nil, nil, err
	}
	pub, err := k.ECPubKey()
	if err != nil {
		return nil, nil, fmt.Errorf("wallet: pubkey: %w", err)
	}
	addr, err := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(pub.SerializeCompressed()), w.cfg.Params)
	if err != nil {
		return nil, nil, fmt.Errorf("wallet: address: %w", err)
	}
	script, err := txscript.PayToAddrScript(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("wallet: script: %w", err)
	}
	return script, addr, nil
}

func (w *Wallet) privKey(ref keyRef) (*btcec.PrivateKey, error) {
	k, err := w.keyAt(ref.branch, ref.index)
	if err != nil {
		return nil, err
	}
	p, err := k.ECPrivKey()
	if err != nil {
		return nil, fmt.Errorf("wallet: private key: %w", err)
	}
	return p, nil
}

func (w *Wallet) save() error {
	if w.path == "" {
		return nil
	}
	return writeSeedFile(w.path, w.file, true)
}

// NewAddress returns the next unused receive address and records it as used.
func (w *Wallet) NewAddress() (btcutil.Address, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, addr, err := w.scriptAt(branchExternal, w.file.NextExt)
	if err != nil {
		return nil, err
	}
	w.file.NextExt++
	if err := w.extendLookahead(); err != nil {
		return nil, err
	}
	if err := w.save(); err != nil {
		return nil, err
	}
	return addr, nil
}

// markUsed moves a branch's counter past index (an address seen on chain).
func (w *Wallet) markUsed(ref keyRef) {
	if ref.branch == branchExternal && ref.index >= w.file.NextExt {
		w.file.NextExt = ref.index + 1
	} else if ref.branch == branchInternal && ref.index >= w.file.NextInt {
		w.file.NextInt = ref.index + 1
	}
}

// Sync scans new blocks up to the chain tip and refreshes the mempool view.
func (w *Wallet) Sync(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.syncLocked(ctx)
}

func (w *Wallet) syncLocked(ctx context.Context) error {
	if w.cfg.Chain == nil {
		return errors.New("wallet: no chain source configured")
	}
	best, err := w.cfg.Chain.BestHeight(ctx)
	if err != nil {
		return fmt.Errorf("wallet: sync: %w", err)
	}
	if w.tipHeight >= w.file.Birthday {
		// A chain shorter than the last block scanned, or another block
		// there, is a reorg. A failed lookup is not: the coins stay, and
		// the next Sync tries again (treating it as a reorg dropped every
		// coin until a rescan from the birthday had finished).
		reorg := w.tipHeight > best
		if !reorg {
			h, err := w.cfg.Chain.BlockHash(ctx, w.tipHeight)
			if err != nil {
				return fmt.Errorf("wallet: sync: hash of block %d: %w", w.tipHeight, err)
			}
			reorg = *h != w.tipHash
		}
		if reorg {
			w.log.Warn("chain tip changed under the wallet (reorg); rescanning", "height", w.tipHeight, "from", w.file.Birthday)
			w.rescan()
		}
	}
	start, used := w.tipHeight+1, [2]uint32{w.file.NextExt, w.file.NextInt}
	restarted := false
	for height := w.tipHeight + 1; height <= best; height++ {
		hash, err := w.cfg.Chain.BlockHash(ctx, height)
		if err != nil {
			return fmt.Errorf("wallet: sync height %d: %w", height, err)
		}
		blk, err := w.cfg.Chain.Block(ctx, hash)
		if err != nil {
			return fmt.Errorf("wallet: sync block %d: %w", height, err)
		}
		if w.tipHeight >= w.file.Birthday && blk.Header.PrevBlock != w.tipHash {
			// A reorg while this scan ran: the block does not follow
			// the last one scanned, which has left the best chain (and
			// the next Sync, comparing only the hash of the last block
			// scanned, would never notice).
			w.log.Warn("chain changed under the wallet's scan (reorg); rescanning", "height", height, "from", w.file.Birthday)
			w.rescan()
			if restarted { // once per Sync; the next one scans afresh
				return fmt.Errorf("wallet: sync: the chain changed twice during the scan (block %d does not follow the block scanned before it)", height)
			}
			restarted, start = true, w.tipHeight+1
			if best, err = w.cfg.Chain.BestHeight(ctx); err != nil {
				return fmt.Errorf("wallet: sync: %w", err)
			}
			height = w.tipHeight // the loop's increment starts it at the birthday
			continue
		}
		if err := w.applyBlock(blk, height); err != nil {
			return err
		}
		w.tipHeight, w.tipHash = height, *hash
	}
	if best >= start {
		w.log.Debug("scanned blocks", "from", start, "to", best, "utxos", len(w.utxos))
	}
	mem, err := w.cfg.Chain.Mempool(ctx)
	if err != nil {
		return fmt.Errorf("wallet: sync mempool: %w", err)
	}
	w.memUTXOs = make(map[wire.OutPoint]*UTXO)
	w.memSpent = make(map[wire.OutPoint]bool)
	for _, tx := range mem {
		if err := w.applyMempoolTx(tx); err != nil {
			return err
		}
	}
	if used != [2]uint32{w.file.NextExt, w.file.NextInt} {
		if err := w.save(); err != nil {
			return err
		}
	}
	return nil
}

// rescan forgets the confirmed coins and the blocks scanned, so that the
// scan starts again at the birthday.
func (w *Wallet) rescan() {
	w.tipHeight, w.tipHash = w.file.Birthday-1, chainhash.Hash{}
	w.utxos = make(map[wire.OutPoint]*UTXO)
}

func (w *Wallet) applyBlock(blk *wire.MsgBlock, height int32) error {
	for i, tx := range blk.Transactions {
		coinbase := i == 0
		if !coinbase {
			for _, in := range tx.TxIn {
				delete(w.utxos, in.PreviousOutPoint)
			}
		}
		txid := tx.TxHash()
		for vout, out := range tx.TxOut {
			ref, ok := w.scripts[string(out.PkScript)]
			if !ok {
				continue
			}
			op := wire.OutPoint{Hash: txid, Index: uint32(vout)}
			w.utxos[op] = &UTXO{
				Coin:   Coin{OutPoint: op, Value: btcutil.Amount(out.Value), PkScript: out.PkScript},
				Height: height, Coinbase: coinbase, Branch: ref.branch, Index: ref.index,
			}
			w.markUsed(ref)
			if err := w.extendLookahead(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *Wallet) applyMempoolTx(tx *wire.MsgTx) error {
	for _, in := range tx.TxIn {
		w.memSpent[in.PreviousOutPoint] = true
		delete(w.memUTXOs, in.PreviousOutPoint)
	}
	txid := tx.TxHash()
	for vout, out := range tx.TxOut {
		ref, ok := w.scripts[string(out.PkScript)]
		if !ok {
			continue
		}
		op := wire.OutPoint{Hash: txid, Index: uint32(vout)}
		if w.memSpent[op] {
			continue
		}
		w.memUTXOs[op] = &UTXO{
			Coin:   Coin{OutPoint: op, Value: btcutil.Amount(out.Value), PkScript: out.PkScript},
			Height: -1, Branch: ref.branch, Index: ref.index,
		}
		w.markUsed(ref)
		if err := w.extendLookahead(); err != nil {
			return err
		}
	}
	return nil
}

func (w *Wallet) mature(u *UTXO) bool {
	if !u.Coinbase {
		return true
	}
	// A coinbase from height h may be spent in block h+maturity; the next
	// block is tip+1.
	return w.tipHeight+1-u.Height >= int32(w.cfg.Params.CoinbaseMaturity)
}

// Height returns the last scanned block height.
func (w *Wallet) Height() int32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.tipHeight
}

// Balance reports the balance as of the last Sync (or Send).
func (w *Wallet) Balance() Balance {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b Balance
	for op, u := range w.utxos {
		switch {
		case w.memSpent[op]:
		case !w.mature(u):
			b.Immature += u.Value
		default:
			b.Confirmed += u.Value
		}
	}
	for _, u := range w.memUTXOs {
		b.Unconfirmed += u.Value
	}
	return b
}

// UTXOs lists the outputs the wallet controls, confirmed first by height,
// then unconfirmed.
func (w *Wallet) UTXOs() []UTXO {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []UTXO
	for op, u := range w.utxos {
		if !w.memSpent[op] {
			out = append(out, *u)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Height != out[j].Height {
			return out[i].Height < out[j].Height
		}
		return out[i].OutPoint.String() < out[j].OutPoint.String()
	})
	for _, u := range w.memUTXOs {
		out = append(out, *u)
	}
	return out
}

func (w *Wallet) spendable() ([]Coin, map[wire.OutPoint]keyRef) {
	var coins []Coin
	refs := make(map[wire.OutPoint]keyRef)
	for op, u := range w.utxos {
		if w.memSpent[op] || !w.mature(u) {
			continue
		}
		coins = append(coins, u.Coin)
		refs[op] = keyRef{u.Branch, u.Index}
	}
	// Deterministic order (map iteration is random).
	sort.Slice(coins, func(i, j int) bool { return coins[i].OutPoint.String() < coins[j].OutPoint.String() })
	return coins, refs
}

// FeeRate returns the chain's estimate for the configured target, or the
// floor if that is higher or the chain has no estimate (regtest). Sat/kvB.
func (w *Wallet) FeeRate(ctx context.Context) (btcutil.Amount, error) {
	if w.cfg.Chain == nil {
		return w.cfg.FeeFloor, nil
	}
	r, err := w.cfg.Chain.FeeRate(ctx, w.cfg.ConfTarget)
	if err != nil {
		return 0, fmt.Errorf("wallet: fee estimate: %w", err)
	}
	return max(r, w.cfg.FeeFloor), nil
}

// CreateTx builds and signs (does not broadcast) a transaction paying outs at
// feeRate (sat/kvB) from confirmed, mature coins as of the last Sync. It
// returns the transaction, the coins it spends (in input order) and its fee.
func (w *Wallet) CreateTx(outs []Output, feeRate btcutil.Amount) (*wire.MsgTx, []Coin, btcutil.Amount, error) {
	return w.CreateTxExcept(outs, feeRate, nil)
}

// CreateTxExcept is CreateTx spending none of the coins in except: those
// of transactions the caller signed and keeps but that need not be in the
// mempool (a broadcast that failed, or a btcd that restarted and lost its
// mempool), which Sync cannot see. Without it the next transaction could
// spend the same coins, and only one of the two would ever confirm.
func (w *Wallet) CreateTxExcept(outs []Output, feeRate btcutil.Amount, except []wire.OutPoint) (*wire.MsgTx, []Coin, btcutil.Amount, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.createTxLocked(outs, feeRate, except...)
}

func (w *Wallet) createTxLocked(outs []Output, feeRate btcutil.Amount, except ...wire.OutPoint) (*wire.MsgTx, []Coin, btcutil.Amount, error) {
	if len(outs) == 0 {
		return nil, nil, 0, errors.New("wallet: no outputs")
	}
	var txOuts []*wire.TxOut
	nData := 0
	for _, o := range outs {
		to, err := o.txOut()
		if err != nil {
			return nil, nil, 0, err
		}
		if o.Data != nil {
			nData++
		}
		txOuts = append(txOuts, to)
	}
	if nData > 1 {
		return nil, nil, 0, fmt.Errorf("wallet: %d OP_RETURN outputs; btcd relays at most one per transaction", nData)
	}
	changeScript, _, err := w.scriptAt(branchInternal, w.file.NextInt)
	if err != nil {
		return nil, nil, 0, err
	}
	coins, refs := w.spendable()
	if len(except) > 0 {
		held := make(map[wire.OutPoint]bool, len(except))
		for _, op := range except {
			held[op] = true
		}
		coins = slices.DeleteFunc(coins, func(c Coin) bool { return held[c.OutPoint] })
	}
	sel, err := SelectCoins(coins, txOuts, feeRate, changeScript)
	if err != nil {
		return nil, nil, 0, err
	}
	tx := BuildTx(sel, txOuts, changeScript)
	keys := make([]*btcec.PrivateKey, len(sel.Inputs))
	for i, c := range sel.Inputs {
		if keys[i], err = w.privKey(refs[c.OutPoint]); err != nil {
			return nil, nil, 0, err
		}
	}
	if err := SignP2WPKH(tx, sel.Inputs, keys); err != nil {
		return nil, nil, 0, err
	}
	return tx, sel.Inputs, sel.Fee, nil
}

// Send syncs, builds, signs and broadcasts a transaction paying outs at the
// estimated fee rate, and records it as unconfirmed. It returns the
// broadcast transaction.
func (w *Wallet) Send(ctx context.Context, outs ...Output) (*wire.MsgTx, error) {
	feeRate, err := w.FeeRate(ctx)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.syncLocked(ctx); err != nil {
		return nil, err
	}
	tx, _, fee, err := w.createTxLocked(outs, feeRate)
	if err != nil {
		return nil, err
	}
	txid, err := w.cfg.Chain.Broadcast(ctx, tx)
	if err != nil {
		return nil, fmt.Errorf("wallet: broadcast: %w", err)
	}
	if err := w.applyMempoolTx(tx); err != nil {
		return nil, err
	}
	if err := w.save(); err != nil {
		return nil, err
	}
	w.log.Info("sent transaction", "txid", txid, "outputs", len(outs), "fee_sat", int64(fee), "fee_rate_sat_per_kvb", int64(feeRate))
	return tx, nil
}

// SendData broadcasts a transaction whose only non-change output is an
// OP_RETURN with data.
func (w *Wallet) SendData(ctx context.Context, data []byte) (*wire.MsgTx, error) {
	return w.Send(ctx, OpReturn(data))
}
