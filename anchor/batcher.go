package anchor

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/wallet"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/nbd-wtf/go-nostr"
)

// Wallet is what the batcher needs from the wallet (*wallet.Wallet
// implements it): build and sign without broadcasting, so the signed
// transaction is on disk before it is on the network.
type Wallet interface {
	Sync(ctx context.Context) error
	FeeRate(ctx context.Context) (btcutil.Amount, error)
	// CreateTxExcept builds a transaction spending none of except: the
	// coins of the batches not mined yet, whose transactions btcd's
	// mempool may have lost.
	CreateTxExcept(outs []wallet.Output, feeRate btcutil.Amount, except []wire.OutPoint) (*wire.MsgTx, []wallet.Coin, btcutil.Amount, error)
	BuildReplacement(tx *wire.MsgTx, feeRate btcutil.Amount) (*wire.MsgTx, btcutil.Amount, error)
}

// Defaults of Config.
const (
	DefaultInterval      = 10 * time.Minute
	DefaultMaxBatch      = 100_000
	DefaultConfirmations = 6
	DefaultBumpAfter     = time.Hour
	DefaultPollInterval  = 30 * time.Second
	// ReorgWatchDepth: attested batches this close to the tip are re-checked
	// each round; if their block leaves the best chain, their attestations
	// are withdrawn and the batch waits for its transaction again.
	ReorgWatchDepth = 144
)

// Config configures a Batcher.
type Config struct {
	Path   string       // SQLite file (created 0600)
	Wallet Wallet       // funds and signs anchor transactions
	Chain  wallet.Chain // btcd: blocks, broadcast (wallet.NewRPCChain)
	Signer EventSigner  // signs attestation events (the node's key)
	// Publish, if set, is called for each new attestation event (the node
	// publishes to its relay). Failures are retried on later rounds.
	Publish func(ctx context.Context, evt *nostr.Event) error
	// Accept, if set, is the node's policy for submitted claims (e.g. only
	// its own, or from contacts); an error refuses the claim.
	Accept func(c *identity.Claim) error

	Interval      time.Duration // anchor pending claims this long after the oldest was submitted
	MaxBatch      int           // or as soon as this many are pending; also the largest batch
	Confirmations int32         // attest once the anchor tx has this many
	BumpAfter     time.Duration // RBF-bump an anchor tx unconfirmed this long
	PollInterval  time.Duration // how often Start's loop runs Tick
	Logger        *slog.Logger
	Now           func() time.Time // tests
}

// Batcher collects claim events, anchors them in batches and builds
// attestations. It is safe for concurrent use; its work is serialised.
type Batcher struct {
	cfg Config
	log *slog.Logger
	db  *sql.DB

	mu     sync.Mutex // serialises Tick, AnchorNow and Submit's writes
	cancel context.CancelFunc
	done   chan struct{}
	kick   chan struct{}
}

// ErrNothingToAnchor: AnchorNow found no pending claim.
var ErrNothingToAnchor = errors.New("anchor: no pending claims")

// Open opens (or creates) the batcher's store. Call Start for the
// background loop, or drive it with Tick.
func Open(ctx context.Context, cfg Config) (*Batcher, error) {
	if cfg.Path == "" || cfg.Wallet == nil || cfg.Chain == nil || cfg.Signer == nil {
		return nil, errors.New("anchor: Config needs Path, Wallet, Chain and Signer")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.Confirmations <= 0 {
		cfg.Confirmations = DefaultConfirmations
	}
	if cfg.BumpAfter <= 0 {
		cfg.BumpAfter = DefaultBumpAfter
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	db, err := openDB(ctx, cfg.Path)
	if err != nil {
		return nil, err
	}
	return &Batcher{cfg: cfg, log: log.With("component", "anchor"), db: db, kick: make(chan struct{}, 1)}, nil
}

// Start runs Tick every PollInterval (and right after AnchorNow or when
// MaxBatch claims are pending) until ctx ends or Close.
func (b *Batcher) Start(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	b.cancel, b.done = cancel, make(chan struct{})
	go func() {
		defer close(b.done)
		t := time.NewTicker(b.cfg.PollInterval)
		defer t.Stop()
		for {
			if err := b.Tick(ctx); err != nil && ctx.Err() == nil {
				b.log.Warn("anchor round failed", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-b.kick:
			}
		}
	}()
}

// Close stops the loop and closes the store.
func (b *Batcher) Close() error {
	if b.cancel != nil {
		b.cancel()
		<-b.done
	}
	return b.db.Close()
}

// Submit validates a claim, rotation or revocation event
// (identity.ValidateClaim, then Config.Accept) and stores it for the next
// batch. It reports whether the event was new; a known event (pending or
// anchored) is not stored or anchored again.
func (b *Batcher) Submit(ctx context.Context, evt *nostr.Event) (bool, error) {
	n, err := b.SubmitMany(ctx, []*nostr.Event{evt})
	return n == 1, err
}

// SubmitMany is Submit for several events in one store transaction: all
// are validated first; nothing is stored if one is refused. It returns how
// many were new.
func (b *Batcher) SubmitMany(ctx context.Context, evts []*nostr.Event) (int, error) {
	claims := make([]*identity.Claim, len(evts))
	for i, evt := range evts {
		c, err := b.accept(evt)
		if err != nil {
			return 0, err
		}
		claims[i] = c
	}
	return b.store(ctx, claims)
}

// SubmitStored is SubmitMany for events a relay stored earlier, to catch up
// on those the batcher never saw: an event the rules or Config.Accept refuse
// is skipped, not fatal. It returns how many were new and how many were
// refused.
func (b *Batcher) SubmitStored(ctx context.Context, evts []*nostr.Event) (added, refused int, err error) {
	known, err := b.known(ctx, evts)
	if err != nil {
		return 0, 0, err
	}
	claims := make([]*identity.Claim, 0, len(evts))
	for _, evt := range evts {
		if known[evt.ID] {
			continue // not validated again
		}
		c, err := b.accept(evt)
		if err != nil {
			refused++
			continue
		}
		claims = append(claims, c)
	}
	added, err = b.store(ctx, claims)
	return added, refused, err
}

// known returns which of evts' ids the batcher has.
func (b *Batcher) known(ctx context.Context, evts []*nostr.Event) (map[string]bool, error) {
	known := map[string]bool{}
	for _, evt := range evts {
		var one int
		switch err := b.db.QueryRowContext(ctx, `SELECT 1 FROM claims WHERE id = ?`, evt.ID).Scan(&one); {
		case err == nil:
			known[evt.ID] = true
		case !errors.Is(err, sql.ErrNoRows):
			return nil, fmt.Errorf("anchor: submit: %w", err)
		}
	}
	return known, nil
}

// accept validates evt as a claim, rotation or revocation and applies
// Config.Accept.
func (b *Batcher) accept(evt *nostr.Event) (*identity.Claim, error) {
	c, err := identity.ValidateClaim(evt)
	if err != nil {
		return nil, fmt.Errorf("anchor: submit: %w", err)
	}
	if b.cfg.Accept != nil {
		if err := b.cfg.Accept(c); err != nil {
			return nil, fmt.Errorf("anchor: submit %s: refused by policy: %w", c.ID, err)
		}
	}
	return c, nil
}

// store adds the claims the batcher does not know, in one transaction, and
// returns how many were new.
func (b *Batcher) store(ctx context.Context, claims []*identity.Claim) (int, error) {
	if len(claims) == 0 {
		return 0, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("anchor: submit: %w", err)
	}
	defer tx.Rollback()
	added := 0
	now := b.cfg.Now().Unix()
	for _, c := range claims {
		raw, err := json.Marshal(c.Event)
		if err != nil {
			return 0, fmt.Errorf("anchor: submit: %w", err)
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO claims (id, kind, handle, pubkey, event, submitted_at)
			VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`, c.ID, c.Event.Kind, c.Handle, c.PubKey, string(raw), now)
		if err != nil {
			return 0, fmt.Errorf("anchor: submit: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			added++
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("anchor: submit: %w", err)
	}
	if added > 0 {
		b.log.Debug("claims submitted", "new", added)
		var pending int
		if b.db.QueryRowContext(ctx, `SELECT count(*) FROM claims WHERE batch_id IS NULL`).Scan(&pending) == nil && pending >= b.cfg.MaxBatch {
			b.poke()
		}
	}
	return added, nil
}

func (b *Batcher) poke() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// BatchState is where a batch is.
type BatchState string

// Batch states.
const (
	BatchBroadcast BatchState = "broadcast" // tx sent, not yet in a block
	BatchMined     BatchState = "mined"     // in a block, waiting for confirmations
	BatchAttested  BatchState = "attested"  // attestations built
)

// BatchInfo describes a batch.
type BatchInfo struct {
	ID        int64      `json:"id"`
	Root      string     `json:"root"`
	Claims    int        `json:"claims"`
	State     BatchState `json:"state"`
	Txid      string     `json:"txid"` // latest version (after RBF bumps) or the mined one
	Fee       int64      `json:"fee_sat"`
	Bumps     int        `json:"bumps"`
	BlockHash string     `json:"block_hash,omitempty"`
	Height    int32      `json:"height,omitempty"`
}

// AnchorNow anchors every pending claim now (in batches of at most
// MaxBatch) and returns the batches made, or ErrNothingToAnchor.
func (b *Batcher) AnchorNow(ctx context.Context) ([]BatchInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []BatchInfo
	for {
		bi, err := b.anchorPending(ctx)
		if errors.Is(err, ErrNothingToAnchor) && len(out) > 0 {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, *bi)
	}
}

// Tick runs one round: anchor pending claims when due (Interval or
// MaxBatch), then advance every unfinished batch (find its tx in new
// blocks, bump it if stuck, attest when confirmed, undo on a reorg), then
// publish unpublished attestations. A new batch that cannot be made (the
// wallet cannot fund it: empty, or every coin held by a batch not mined
// yet) does not stop the round: advancing the batches made earlier is what
// frees their coins and attests their claims. The round's error then
// reports it.
func (b *Batcher) Tick(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var pending int
	var oldest sql.NullInt64
	if err := b.db.QueryRowContext(ctx, `SELECT count(*), min(submitted_at) FROM claims WHERE batch_id IS NULL`).Scan(&pending, &oldest); err != nil {
		return fmt.Errorf("anchor: pending claims: %w", err)
	}
	var anchorErr error
	if pending >= b.cfg.MaxBatch || (pending > 0 && oldest.Valid && b.cfg.Now().Sub(time.Unix(oldest.Int64, 0)) >= b.cfg.Interval) {
		for {
			if _, err := b.anchorPending(ctx); err != nil {
				if !errors.Is(err, ErrNothingToAnchor) {
					anchorErr = err
				}
				break
			}
		}
	}
	if err := b.advance(ctx); err != nil {
		return errors.Join(anchorErr, err)
	}
	return errors.Join(anchorErr, b.publish(ctx))
}

// anchorPending makes one batch of up to MaxBatch pending claims: tree,
// signed tx, all persisted in one store transaction, then broadcast.
func (b *Batcher) anchorPending(ctx context.Context) (*BatchInfo, error) {
	rows, err := b.db.QueryContext(ctx, `SELECT seq, id FROM claims WHERE batch_id IS NULL ORDER BY seq LIMIT ?`, b.cfg.MaxBatch)
	if err != nil {
		return nil, fmt.Errorf("anchor: pending claims: %w", err)
	}
	var seqs []int64
	var ids [][32]byte
	for rows.Next() {
		var seq int64
		var id string
		if err := rows.Scan(&seq, &id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("anchor: pending claims: %w", err)
		}
		var raw [32]byte
		if _, err := hex.Decode(raw[:], []byte(id)); err != nil {
			rows.Close()
			return nil, fmt.Errorf("anchor: stored claim id %q: %w", id, err)
		}
		seqs, ids = append(seqs, seq), append(ids, raw)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("anchor: pending claims: %w", err)
	}
	if len(ids) == 0 {
		return nil, ErrNothingToAnchor
	}
	tree, err := NewTree(ids)
	if err != nil {
		return nil, err
	}
	root := tree.Root()
	if err := b.cfg.Wallet.Sync(ctx); err != nil {
		return nil, fmt.Errorf("anchor: wallet sync: %w", err)
	}
	rate, err := b.cfg.Wallet.FeeRate(ctx)
	if err != nil {
		return nil, fmt.Errorf("anchor: fee rate: %w", err)
	}
	held, err := b.heldCoins(ctx)
	if err != nil {
		return nil, err
	}
	tx, _, fee, err := b.cfg.Wallet.CreateTxExcept([]wallet.Output{wallet.OpReturn(Payload(root))}, rate, held)
	if err != nil {
		if len(held) > 0 {
			return nil, fmt.Errorf("anchor: build anchor tx (leaving alone %d coins of batches not mined yet): %w", len(held), err)
		}
		return nil, fmt.Errorf("anchor: build anchor tx: %w", err)
	}
	best, err := b.cfg.Chain.BestHeight(ctx)
	if err != nil {
		return nil, fmt.Errorf("anchor: best height: %w", err)
	}
	var scanHash sql.NullString // the block the scan starts after, to notice a reorg of it
	if h, err := b.cfg.Chain.BlockHash(ctx, best); err == nil {
		scanHash = sql.NullString{String: h.String(), Valid: true}
	}
	raw, err := serializeTx(tx)
	if err != nil {
		return nil, err
	}
	txid := tx.TxHash().String()
	now := b.cfg.Now().Unix()

	dtx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("anchor: store batch: %w", err)
	}
	defer dtx.Rollback()
	res, err := dtx.ExecContext(ctx, `INSERT INTO batches (root, leaf_count, state, created_at, scan_height, scan_hash, txid, raw_tx, fee, broadcast_at)
		VALUES (?, ?, 'broadcast', ?, ?, ?, ?, ?, ?, ?)`, root[:], len(ids), now, best, scanHash, txid, raw, int64(fee), now)
	if err != nil {
		return nil, fmt.Errorf("anchor: store batch: %w", err)
	}
	batchID, _ := res.LastInsertId()
	if _, err := dtx.ExecContext(ctx, `INSERT INTO batch_txs (txid, batch_id, raw_tx, fee, created_at) VALUES (?, ?, ?, ?, ?)`,
		txid, batchID, raw, int64(fee), now); err != nil {
		return nil, fmt.Errorf("anchor: store batch tx: %w", err)
	}
	stmt, err := dtx.PrepareContext(ctx, `UPDATE claims SET batch_id = ?, leaf_index = ? WHERE seq = ? AND batch_id IS NULL`)
	if err != nil {
		return nil, fmt.Errorf("anchor: assign claims: %w", err)
	}
	defer stmt.Close()
	for i, seq := range seqs {
		if _, err := stmt.ExecContext(ctx, batchID, i, seq); err != nil {
			return nil, fmt.Errorf("anchor: assign claims: %w", err)
		}
	}
	if err := dtx.Commit(); err != nil {
		return nil, fmt.Errorf("anchor: store batch: %w", err)
	}
	b.log.Info("anchor batch created", "batch", batchID, "claims", len(ids), "root", hex.EncodeToString(root[:]), "txid", txid, "fee_sat", int64(fee))
	// The batch is on disk: a failed broadcast is retried by later rounds.
	b.broadcast(ctx, tx)
	return &BatchInfo{ID: batchID, Root: hex.EncodeToString(root[:]), Claims: len(ids), State: BatchBroadcast, Txid: txid, Fee: int64(fee)}, nil
}

// heldCoins returns the coins that the transactions of batches not mined
// yet spend, every version of each (a fee bump spends the same ones). The
// wallet sees a batch's spend only while btcd's mempool holds its
// transaction; one whose broadcast failed, or that a restarted btcd
// forgot, is rebroadcast by later rounds, and a new batch spending the
// same coins would keep one of the two from ever confirming.
func (b *Batcher) heldCoins(ctx context.Context) ([]wire.OutPoint, error) {
	rows, err := b.db.QueryContext(ctx, `SELECT t.raw_tx FROM batch_txs t JOIN batches b ON b.id = t.batch_id WHERE b.state = 'broadcast'`)
	if err != nil {
		return nil, fmt.Errorf("anchor: unmined batches: %w", err)
	}
	defer rows.Close()
	var held []wire.OutPoint
	for rows.Next() {
		var raw []byte
		if err := rows.Scan(&raw); err != nil {
			return nil, fmt.Errorf("anchor: unmined batches: %w", err)
		}
		tx, err := parseTx(raw)
		if err != nil {
			return nil, err
		}
		for _, in := range tx.TxIn {
			held = append(held, in.PreviousOutPoint)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("anchor: unmined batches: %w", err)
	}
	return held, nil
}

func (b *Batcher) broadcast(ctx context.Context, tx *wire.MsgTx) {
	if _, err := b.cfg.Chain.Broadcast(ctx, tx); err != nil {
		msg := err.Error()
		if !strings.Contains(msg, "already have") && !strings.Contains(msg, "already exists") {
			b.log.Warn("anchor tx broadcast failed; will retry", "txid", tx.TxHash(), "err", err)
		}
		return
	}
	if err := b.cfg.Wallet.Sync(ctx); err != nil {
		b.log.Warn("wallet sync after broadcast", "err", err)
	}
}

func serializeTx(tx *wire.MsgTx) ([]byte, error) {
	var buf bytes.Buffer
	if err := tx.Serialize(&buf); err != nil {
		return nil, fmt.Errorf("anchor: serialise tx: %w", err)
	}
	return buf.Bytes(), nil
}

func parseTx(raw []byte) (*wire.MsgTx, error) {
	tx := new(wire.MsgTx)
	if err := tx.Deserialize(bytes.NewReader(raw)); err != nil {
		return nil, fmt.Errorf("anchor: stored tx: %w", err)
	}
	return tx, nil
}

type batchRow struct {
	id        int64
	root      Hash
	count     int
	state     BatchState
	scan      int32
	scanHash  sql.NullString // the block at scan (NULL: not known)
	txid      string
	raw       []byte
	fee       int64
	broadcast int64
	bumps     int
	blockHash sql.NullString
	height    sql.NullInt64
	txIndex   sql.NullInt64
	minedTx   []byte
	minedTxid sql.NullString
	createdAt int64
}

func (b *Batcher) loadBatches(ctx context.Context, where string, args ...any) ([]*batchRow, error) {
	rows, err := b.db.QueryContext(ctx, `SELECT id, root, leaf_count, state, scan_height, scan_hash, txid, raw_tx, fee, broadcast_at, bumps,
		block_hash, height, tx_index, mined_tx, mined_txid, created_at FROM batches `+where+` ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("anchor: load batches: %w", err)
	}
	defer rows.Close()
	var out []*batchRow
	for rows.Next() {
		r := new(batchRow)
		var root []byte
		if err := rows.Scan(&r.id, &root, &r.count, &r.state, &r.scan, &r.scanHash, &r.txid, &r.raw, &r.fee, &r.broadcast, &r.bumps,
			&r.blockHash, &r.height, &r.txIndex, &r.minedTx, &r.minedTxid, &r.createdAt); err != nil {
			return nil, fmt.Errorf("anchor: load batches: %w", err)
		}
		copy(r.root[:], root)
		out = append(out, r)
	}
	return out, rows.Err()
}

// advance moves every unfinished (or recently attested) batch forward.
func (b *Batcher) advance(ctx context.Context) error {
	best, err := b.cfg.Chain.BestHeight(ctx)
	if err != nil {
		return fmt.Errorf("anchor: best height: %w", err)
	}
	batches, err := b.loadBatches(ctx, `WHERE state != 'attested' OR height > ?`, best-ReorgWatchDepth)
	if err != nil {
		return err
	}
	for _, r := range batches {
		if err := b.advanceOne(ctx, r, best); err != nil {
			return fmt.Errorf("anchor: batch %d: %w", r.id, err)
		}
	}
	return nil
}

func (b *Batcher) advanceOne(ctx context.Context, r *batchRow, best int32) error {
	if r.state != BatchBroadcast {
		// Still in the best chain?
		var h *chainhash.Hash
		if int32(r.height.Int64) <= best {
			var err error
			if h, err = b.cfg.Chain.BlockHash(ctx, int32(r.height.Int64)); err != nil {
				return err
			}
		}
		if h == nil || h.String() != r.blockHash.String {
			fork, forkHash, err := b.forkPoint(ctx, r.id, r.blockHash.String, int32(r.height.Int64), best)
			if err != nil {
				return err
			}
			b.log.Warn("anchor block left the best chain (reorg); waiting for the tx again",
				"batch", r.id, "height", r.height.Int64, "block", r.blockHash.String, "rescan_from", fork+1)
			if _, err := b.db.ExecContext(ctx, `DELETE FROM attestations WHERE batch_id = ?`, r.id); err != nil {
				return err
			}
			// The version that was mined is back in the mempool, and the
			// next batch may spend its change: if it is one of ours, it
			// becomes the version to rebroadcast (not a later bump of it,
			// which would evict that spender), and the bump clock restarts.
			var raw []byte
			var fee int64
			switch err := b.db.QueryRowContext(ctx, `SELECT raw_tx, fee FROM batch_txs WHERE txid = ? AND batch_id = ?`,
				r.minedTxid.String, r.id).Scan(&raw, &fee); {
			case err == nil:
				r.txid, r.raw, r.fee = r.minedTxid.String, raw, fee
			case !errors.Is(err, sql.ErrNoRows):
				return err
			}
			r.broadcast = b.cfg.Now().Unix()
			if _, err := b.db.ExecContext(ctx, `UPDATE batches SET state = 'broadcast', scan_height = ?, scan_hash = ?, block_hash = NULL,
				height = NULL, tx_index = NULL, mined_tx = NULL, mined_txid = NULL, txid = ?, raw_tx = ?, fee = ?, broadcast_at = ?
				WHERE id = ?`, fork, forkHash, r.txid, r.raw, r.fee, r.broadcast, r.id); err != nil {
				return err
			}
			r.state, r.scan, r.scanHash = BatchBroadcast, fork, forkHash
			r.minedTxid, r.minedTx = sql.NullString{}, nil
		}
	}
	if r.state == BatchBroadcast {
		found, err := b.scan(ctx, r, best)
		if err != nil {
			return err
		}
		if !found {
			return b.maybeBump(ctx, r, best)
		}
	}
	if r.state == BatchMined && best-int32(r.height.Int64)+1 >= b.cfg.Confirmations {
		return b.attest(ctx, r)
	}
	return nil
}

// forkPoint returns the height (and hash) of the last block that the
// branch holding a now stale block (the batch's block, or the one its scan
// stopped at) shares with the best chain: every block above it may be new,
// and the transaction may be mined in any of them, lower than where it was.
// It walks the stale branch back from that block (Block, for each block's
// parent) until the parent is the best chain's block at its height. When
// the chain source cannot serve a stale block (it never saw it, or forgot
// it), it returns the stale block's height minus ReorgWatchDepth (hash not
// known): no reorg deeper than that is followed anyway, and rescanning
// from there costs blocks, never the transaction.
func (b *Batcher) forkPoint(ctx context.Context, batch int64, staleHash string, height, best int32) (int32, sql.NullString, error) {
	floor := max(0, height-ReorgWatchDepth)
	hash, err := chainhash.NewHashFromStr(staleHash)
	if err != nil {
		return floor, sql.NullString{}, nil
	}
	for h := height; h > floor; h-- {
		blk, err := b.cfg.Chain.Block(ctx, hash)
		if err != nil {
			b.log.Info("stale block unknown to the chain source; rescanning from the reorg watch depth",
				"batch", batch, "block", hash.String(), "height", h, "err", err)
			return floor, sql.NullString{}, nil
		}
		hash = &blk.Header.PrevBlock // the stale branch's block at h-1
		if h-1 > best {
			continue
		}
		onBest, err := b.cfg.Chain.BlockHash(ctx, h-1)
		if err != nil {
			return 0, sql.NullString{}, fmt.Errorf("best chain at height %d: %w", h-1, err)
		}
		if *onBest == *hash {
			return h - 1, sql.NullString{String: hash.String(), Valid: true}, nil
		}
	}
	return floor, sql.NullString{}, nil
}

// scan looks for the batch's root in blocks after scan_height: any
// transaction that commits it the way a proof needs counts (the original,
// any replacement, even one made before a crash, or someone else's copy).
// A transaction that merely carries the payload but that no proof could use
// (a second OP_RETURN, or too large) is passed over: a copy like that, mined
// first, would otherwise leave the whole batch with attestations every
// verifier refuses, and the node's own transaction unseen.
//
// If the block the last scan stopped at has left the best chain, a reorg
// replaced blocks already read, and the transaction may be mined in one of
// them: the scan goes back to the fork point first.
func (b *Batcher) scan(ctx context.Context, r *batchRow, best int32) (bool, error) {
	if r.scanHash.Valid {
		moved := r.scan > best
		if !moved {
			at, err := b.cfg.Chain.BlockHash(ctx, r.scan)
			if err != nil {
				return false, err
			}
			moved = at.String() != r.scanHash.String
		}
		if moved {
			fork, forkHash, err := b.forkPoint(ctx, r.id, r.scanHash.String, r.scan, best)
			if err != nil {
				return false, err
			}
			b.log.Warn("blocks scanned for an anchor tx left the best chain (reorg); scanning again from the fork",
				"batch", r.id, "height", r.scan, "block", r.scanHash.String, "rescan_from", fork+1)
			if _, err := b.db.ExecContext(ctx, `UPDATE batches SET scan_height = ?, scan_hash = ? WHERE id = ?`, fork, forkHash, r.id); err != nil {
				return false, err
			}
			r.scan, r.scanHash = fork, forkHash
		}
	}
	payload := Payload(r.root)
	for h := r.scan + 1; h <= best; h++ {
		hash, err := b.cfg.Chain.BlockHash(ctx, h)
		if err != nil {
			return false, err
		}
		blk, err := b.cfg.Chain.Block(ctx, hash)
		if err != nil {
			return false, err
		}
		for i, tx := range blk.Transactions {
			if !hasPayload(tx, payload) {
				continue
			}
			stripped, err := StrippedTx(tx)
			if err != nil {
				return false, err
			}
			if root, err := TxRoot(tx); err != nil || root != r.root || len(stripped) > MaxRawTx {
				b.log.Warn("anchor payload in a transaction no proof can use; still waiting", "batch", r.id,
					"txid", tx.TxHash().String(), "height", h, "err", err, "size", len(stripped))
				continue
			}
			txid := tx.TxHash().String()
			if _, err := b.db.ExecContext(ctx, `UPDATE batches SET state = 'mined', scan_height = ?, scan_hash = ?, block_hash = ?, height = ?,
				tx_index = ?, mined_tx = ?, mined_txid = ? WHERE id = ?`, h, hash.String(), hash.String(), h, i, stripped, txid, r.id); err != nil {
				return false, fmt.Errorf("record mined anchor: %w", err)
			}
			b.log.Info("anchor tx mined", "batch", r.id, "txid", txid, "height", h, "block", hash.String(), "position", i)
			r.state, r.scan, r.scanHash = BatchMined, h, sql.NullString{String: hash.String(), Valid: true}
			r.blockHash = sql.NullString{String: hash.String(), Valid: true}
			r.height = sql.NullInt64{Int64: int64(h), Valid: true}
			r.txIndex = sql.NullInt64{Int64: int64(i), Valid: true}
			r.minedTx, r.minedTxid = stripped, sql.NullString{String: txid, Valid: true}
			return true, nil
		}
		if _, err := b.db.ExecContext(ctx, `UPDATE batches SET scan_height = ?, scan_hash = ? WHERE id = ?`, h, hash.String(), r.id); err != nil {
			return false, err
		}
		r.scan, r.scanHash = h, sql.NullString{String: hash.String(), Valid: true}
	}
	return false, nil
}

func hasPayload(tx *wire.MsgTx, payload []byte) bool {
	for _, o := range tx.TxOut {
		if len(o.PkScript) == 2+len(payload) && bytes.Equal(o.PkScript[2:], payload) && o.PkScript[0] == 0x6a {
			return true
		}
	}
	return false
}

// maybeBump rebroadcasts the batch's latest tx and, once it has waited
// BumpAfter, replaces it with a higher fee (RBF): bumpRate. The
// replacement is stored before it is broadcast. A tx that another batch's
// tx spends (after a reorg: the next batch spent its change while it was
// confirmed) is only rebroadcast: a replacement has another txid, and the
// spender could never confirm.
func (b *Batcher) maybeBump(ctx context.Context, r *batchRow, best int32) error {
	tx, err := parseTx(r.raw)
	if err != nil {
		return err
	}
	if b.cfg.Now().Sub(time.Unix(r.broadcast, 0)) < b.cfg.BumpAfter {
		b.broadcast(ctx, tx)
		return nil
	}
	spender, err := b.spentBy(ctx, r, best)
	if err != nil {
		return err
	}
	if spender != 0 {
		b.broadcast(ctx, tx)
		return nil
	}
	return b.bump(ctx, r, tx)
}

// spentBy returns the id of another batch with a transaction (any
// version) spending an output of r's current tx, or 0. Batches attested
// deeper than ReorgWatchDepth are not looked at: their transactions are
// settled, and so are their parents.
func (b *Batcher) spentBy(ctx context.Context, r *batchRow, best int32) (int64, error) {
	rows, err := b.db.QueryContext(ctx, `SELECT t.batch_id, t.raw_tx FROM batch_txs t JOIN batches b ON b.id = t.batch_id
		WHERE t.batch_id != ? AND (b.state != 'attested' OR b.height > ?)`, r.id, best-ReorgWatchDepth)
	if err != nil {
		return 0, fmt.Errorf("spending batches: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var raw []byte
		if err := rows.Scan(&id, &raw); err != nil {
			return 0, fmt.Errorf("spending batches: %w", err)
		}
		tx, err := parseTx(raw)
		if err != nil {
			return 0, err
		}
		for _, in := range tx.TxIn {
			if in.PreviousOutPoint.Hash.String() == r.txid {
				return id, nil
			}
		}
	}
	return 0, rows.Err()
}

// BumpNow replaces the unconfirmed anchor tx of batch id right away.
func (b *Batcher) BumpNow(ctx context.Context, id int64) (*BatchInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	rs, err := b.loadBatches(ctx, `WHERE id = ? AND state = 'broadcast'`, id)
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("anchor: batch %d is not waiting for confirmation", id)
	}
	tx, err := parseTx(rs[0].raw)
	if err != nil {
		return nil, err
	}
	best, err := b.cfg.Chain.BestHeight(ctx)
	if err != nil {
		return nil, fmt.Errorf("anchor: best height: %w", err)
	}
	if spender, err := b.spentBy(ctx, rs[0], best); err != nil {
		return nil, err
	} else if spender != 0 {
		return nil, fmt.Errorf("anchor: batch %d's tx %s is spent by batch %d's: a replacement would leave that one unconfirmable", id, rs[0].txid, spender)
	}
	if err := b.bump(ctx, rs[0], tx); err != nil {
		return nil, err
	}
	return b.batchInfo(ctx, id)
}

// bumpRate is the fee rate a replacement asks for: twice the old rate, at
// least the wallet's current estimate, but no more than twice that
// estimate (the wallet adds BIP-125's minimum increment over the old fee
// whatever the rate). Doubling without that bound gave a transaction left
// unconfirmed for a day 2^24 times its rate: the whole change to miners.
func bumpRate(oldRate, est btcutil.Amount) btcutil.Amount {
	return max(est, min(2*oldRate, 2*est))
}

func (b *Batcher) bump(ctx context.Context, r *batchRow, tx *wire.MsgTx) error {
	if err := b.cfg.Wallet.Sync(ctx); err != nil {
		return fmt.Errorf("wallet sync: %w", err)
	}
	est, err := b.cfg.Wallet.FeeRate(ctx)
	if err != nil {
		return err
	}
	vsize := wallet.EstimateVSize(len(tx.TxIn), tx.TxOut)
	oldRate := btcutil.Amount(r.fee * 1000 / max(vsize, 1))
	repl, fee, err := b.cfg.Wallet.BuildReplacement(tx, bumpRate(oldRate, est))
	if err != nil {
		b.log.Warn("anchor tx fee bump failed", "batch", r.id, "txid", r.txid, "err", err)
		return nil // most often: the original just confirmed; the next scan finds it
	}
	raw, err := serializeTx(repl)
	if err != nil {
		return err
	}
	txid, now := repl.TxHash().String(), b.cfg.Now().Unix()
	dtx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer dtx.Rollback()
	if _, err := dtx.ExecContext(ctx, `INSERT INTO batch_txs (txid, batch_id, raw_tx, fee, created_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (txid) DO NOTHING`, txid, r.id, raw, int64(fee), now); err != nil {
		return err
	}
	if _, err := dtx.ExecContext(ctx, `UPDATE batches SET txid = ?, raw_tx = ?, fee = ?, broadcast_at = ?, bumps = bumps + 1 WHERE id = ?`,
		txid, raw, int64(fee), now, r.id); err != nil {
		return err
	}
	if err := dtx.Commit(); err != nil {
		return err
	}
	b.log.Info("anchor tx fee-bumped (RBF)", "batch", r.id, "old_txid", r.txid, "txid", txid, "old_fee_sat", r.fee, "fee_sat", int64(fee))
	r.txid, r.raw, r.fee, r.broadcast = txid, raw, int64(fee), now
	b.broadcast(ctx, repl)
	return nil
}

// attest builds the proof and attestation event of every claim of a mined
// batch, stores them all in one transaction and marks the batch attested.
func (b *Batcher) attest(ctx context.Context, r *batchRow) error {
	bh, err := chainhash.NewHashFromStr(r.blockHash.String)
	if err != nil {
		return err
	}
	blk, err := b.cfg.Chain.Block(ctx, bh)
	if err != nil {
		return err
	}
	txids := make([]chainhash.Hash, len(blk.Transactions))
	for i, tx := range blk.Transactions {
		txids[i] = tx.TxHash()
	}
	if TxMerkleRoot(txids) != blk.Header.MerkleRoot {
		return fmt.Errorf("block %s: txids do not match its merkle root", bh)
	}
	idx := int(r.txIndex.Int64)
	branch, err := BuildTxBranch(txids, idx)
	if err != nil {
		return err
	}
	rows, err := b.db.QueryContext(ctx, `SELECT id, event, leaf_index FROM claims WHERE batch_id = ? ORDER BY leaf_index`, r.id)
	if err != nil {
		return err
	}
	type leaf struct {
		id  [32]byte
		evt *nostr.Event
	}
	var leaves []leaf
	for rows.Next() {
		var id, raw string
		var li int
		if err := rows.Scan(&id, &raw, &li); err != nil {
			rows.Close()
			return err
		}
		var l leaf
		hex.Decode(l.id[:], []byte(id))
		l.evt = new(nostr.Event)
		if err := json.Unmarshal([]byte(raw), l.evt); err != nil {
			rows.Close()
			return fmt.Errorf("stored claim %s: %w", id, err)
		}
		if li != len(leaves) {
			rows.Close()
			return fmt.Errorf("stored leaf indexes of batch are not 0..n-1")
		}
		leaves = append(leaves, l)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	ids := make([][32]byte, len(leaves))
	for i, l := range leaves {
		ids[i] = l.id
	}
	tree, err := NewTree(ids)
	if err != nil {
		return err
	}
	if tree.Root() != r.root {
		return fmt.Errorf("stored claims give root %x, the batch committed %x", tree.Root(), r.root)
	}
	txid, _ := chainhash.NewHashFromStr(r.minedTxid.String)
	dtx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer dtx.Rollback()
	stmt, err := dtx.PrepareContext(ctx, `INSERT INTO attestations (claim_id, batch_id, event) VALUES (?, ?, ?)
		ON CONFLICT (claim_id) DO UPDATE SET batch_id = excluded.batch_id, event = excluded.event, published = 0`)
	if err != nil {
		return err
	}
	defer stmt.Close()
	now := nostr.Timestamp(b.cfg.Now().Unix())
	for i, l := range leaves {
		p := &Proof{
			ClaimID: l.id, LeafIndex: uint32(i), LeafCount: uint32(len(leaves)), Path: tree.Path(i),
			Txid: *txid, RawTx: r.minedTx, TxIndex: uint32(idx), Branch: branch, BlockHash: *bh, Height: uint32(r.height.Int64),
		}
		evt, err := NewAttestationEvent(b.cfg.Signer, l.evt, p, now)
		if err != nil {
			return err
		}
		raw, err := json.Marshal(evt)
		if err != nil {
			return err
		}
		if _, err := stmt.ExecContext(ctx, hex.EncodeToString(l.id[:]), r.id, string(raw)); err != nil {
			return err
		}
	}
	if _, err := dtx.ExecContext(ctx, `UPDATE batches SET state = 'attested' WHERE id = ?`, r.id); err != nil {
		return err
	}
	if err := dtx.Commit(); err != nil {
		return err
	}
	r.state = BatchAttested
	b.log.Info("anchor batch attested", "batch", r.id, "claims", len(leaves), "height", r.height.Int64)
	return nil
}

// publish hands unpublished attestations to Config.Publish.
func (b *Batcher) publish(ctx context.Context) error {
	if b.cfg.Publish == nil {
		return nil
	}
	rows, err := b.db.QueryContext(ctx, `SELECT claim_id, event FROM attestations WHERE published = 0`)
	if err != nil {
		return err
	}
	type item struct{ id, raw string }
	var items []item
	for rows.Next() {
		var it item
		if err := rows.Scan(&it.id, &it.raw); err != nil {
			rows.Close()
			return err
		}
		items = append(items, it)
	}
	rows.Close()
	for _, it := range items {
		evt := new(nostr.Event)
		if err := json.Unmarshal([]byte(it.raw), evt); err != nil {
			return err
		}
		if err := b.cfg.Publish(ctx, evt); err != nil {
			b.log.Warn("publish attestation failed; will retry", "claim", it.id, "err", err)
			return nil
		}
		if _, err := b.db.ExecContext(ctx, `UPDATE attestations SET published = 1 WHERE claim_id = ?`, it.id); err != nil {
			return err
		}
	}
	return nil
}

func (b *Batcher) batchInfo(ctx context.Context, id int64) (*BatchInfo, error) {
	rs, err := b.loadBatches(ctx, `WHERE id = ?`, id)
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("anchor: no batch %d", id)
	}
	return rs[0].info(), nil
}

func (r *batchRow) info() *BatchInfo {
	bi := &BatchInfo{ID: r.id, Root: hex.EncodeToString(r.root[:]), Claims: r.count, State: r.state, Txid: r.txid, Fee: r.fee, Bumps: r.bumps}
	if r.minedTxid.Valid {
		bi.Txid = r.minedTxid.String
	}
	if r.blockHash.Valid {
		bi.BlockHash, bi.Height = r.blockHash.String, int32(r.height.Int64)
	}
	return bi
}

// Batches lists every batch, oldest first.
func (b *Batcher) Batches(ctx context.Context) ([]BatchInfo, error) {
	rs, err := b.loadBatches(ctx, "")
	if err != nil {
		return nil, err
	}
	out := make([]BatchInfo, len(rs))
	for i, r := range rs {
		out[i] = *r.info()
	}
	return out, nil
}

// ClaimStatus is where one submitted claim is.
type ClaimStatus struct {
	ClaimID string     `json:"claim_id"`
	Handle  string     `json:"handle"`
	Pending bool       `json:"pending"` // not in a batch yet
	Batch   *BatchInfo `json:"batch,omitempty"`
	Leaf    int        `json:"leaf_index"`
}

// Status reports a submitted claim's progress (sql.ErrNoRows wrapped if
// unknown).
func (b *Batcher) Status(ctx context.Context, claimID string) (*ClaimStatus, error) {
	var st ClaimStatus
	var batch, leaf sql.NullInt64
	err := b.db.QueryRowContext(ctx, `SELECT id, handle, batch_id, leaf_index FROM claims WHERE id = ?`, claimID).
		Scan(&st.ClaimID, &st.Handle, &batch, &leaf)
	if err != nil {
		return nil, fmt.Errorf("anchor: claim %s: %w", claimID, err)
	}
	st.Pending = !batch.Valid
	if batch.Valid {
		if st.Batch, err = b.batchInfo(ctx, batch.Int64); err != nil {
			return nil, err
		}
		st.Leaf = int(leaf.Int64)
	}
	return &st, nil
}

// Attestations returns the stored attestation events of the claims of
// handle ("" for all), and the claim events themselves (claims not yet
// attested included), for Verify or for serving to others.
func (b *Batcher) Attestations(ctx context.Context, handle string) (claims, attestations []*nostr.Event, err error) {
	q := `SELECT c.event, a.event FROM claims c LEFT JOIN attestations a ON a.claim_id = c.id`
	var args []any
	if handle != "" {
		q += ` WHERE c.handle = ?`
		args = append(args, handle)
	}
	rows, err := b.db.QueryContext(ctx, q+` ORDER BY c.seq`, args...)
	if err != nil {
		return nil, nil, fmt.Errorf("anchor: attestations: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var ce string
		var ae sql.NullString
		if err := rows.Scan(&ce, &ae); err != nil {
			return nil, nil, fmt.Errorf("anchor: attestations: %w", err)
		}
		c := new(nostr.Event)
		if err := json.Unmarshal([]byte(ce), c); err != nil {
			return nil, nil, fmt.Errorf("anchor: stored claim: %w", err)
		}
		claims = append(claims, c)
		if ae.Valid {
			a := new(nostr.Event)
			if err := json.Unmarshal([]byte(ae.String), a); err != nil {
				return nil, nil, fmt.Errorf("anchor: stored attestation: %w", err)
			}
			attestations = append(attestations, a)
		}
	}
	return claims, attestations, rows.Err()
}
