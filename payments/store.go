package payments

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	_ "github.com/mattn/go-sqlite3" // database/sql driver "sqlite3"
)

var migrations = []string{
	`CREATE TABLE tips (
		id            TEXT NOT NULL,              -- tip id, 32 hex (chosen by the sender)
		dir           TEXT NOT NULL,              -- out | in
		peer          TEXT NOT NULL,              -- the other side's hex pubkey
		conversation  TEXT NOT NULL DEFAULT '',
		amount_msat   INTEGER NOT NULL,
		memo          TEXT NOT NULL DEFAULT '',
		state         TEXT NOT NULL,
		reason        TEXT NOT NULL DEFAULT '',   -- why failed / cancelled
		last_error    TEXT NOT NULL DEFAULT '',   -- transient (LND unreachable), cleared on progress
		attempts      INTEGER NOT NULL DEFAULT 0,
		next_ms       INTEGER NOT NULL DEFAULT 0, -- next retry of the pending LND step
		mode          TEXT NOT NULL DEFAULT 'auto',
		peer_ln       TEXT NOT NULL DEFAULT '',   -- LND node of the recipient's handle claim
		request_id    TEXT NOT NULL DEFAULT '',   -- request rumor id = description hash
		invoice_msg   TEXT NOT NULL DEFAULT '',
		bolt11        TEXT NOT NULL DEFAULT '',
		payment_hash  TEXT NOT NULL DEFAULT '',
		preimage      TEXT NOT NULL DEFAULT '',   -- secret until settled
		fee_msat      INTEGER NOT NULL DEFAULT 0,
		keysend       INTEGER NOT NULL DEFAULT 0,
		receipt       INTEGER NOT NULL DEFAULT 0, -- in: a valid receipt arrived
		cancel_inv    INTEGER NOT NULL DEFAULT 0, -- in: cancel our open invoice in LND
		created_ms    INTEGER NOT NULL,
		updated_ms    INTEGER NOT NULL,
		paying_ms     INTEGER NOT NULL DEFAULT 0,
		done_ms       INTEGER NOT NULL DEFAULT 0, -- paid (out) / settled
		PRIMARY KEY (id, dir, peer)
	);
	CREATE UNIQUE INDEX tips_by_hash ON tips(payment_hash, dir) WHERE payment_hash != '';
	CREATE INDEX tips_by_state ON tips(state, next_ms);
	CREATE INDEX tips_by_conversation ON tips(conversation, created_ms);
	CREATE TABLE outbox (              -- tip rumors to hand to the chat service
		seq      INTEGER PRIMARY KEY AUTOINCREMENT,
		tip_id   TEXT NOT NULL,
		dir      TEXT NOT NULL,
		peer     TEXT NOT NULL,
		kind     INTEGER NOT NULL,
		content  TEXT NOT NULL,
		tags     TEXT NOT NULL          -- JSON
	);
	CREATE TABLE cursors (name TEXT PRIMARY KEY, value INTEGER NOT NULL); -- LND add_index / settle_index`,

	// 2: a receipt for a tip we do not know yet, or before its payment hash
	// is known, waits here instead of marking anything paid: it counts only
	// once LND's settlement shows a payment hash its preimage hashes to. An
	// outbox message that cannot be handed to the messenger waits with a
	// backoff instead of holding up every message behind it.
	`CREATE TABLE early_receipts (
		tip_id      TEXT NOT NULL,
		peer        TEXT NOT NULL,
		preimage    TEXT NOT NULL,
		received_ms INTEGER NOT NULL,
		PRIMARY KEY (tip_id, peer)
	);
	ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE outbox ADD COLUMN next_ms INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE outbox ADD COLUMN failing_ms INTEGER NOT NULL DEFAULT 0; -- first failure`,

	// 3: the payment hash of our invoice that cancel_inv cancels, when a
	// keysend settled the tip and its payment hash replaced the invoice's.
	`ALTER TABLE tips ADD COLUMN cancel_hash TEXT NOT NULL DEFAULT '';`,
}

type store struct{ db *sql.DB }

func openStore(ctx context.Context, path string) (*store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("payments: %w", err)
	}
	if f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600); err == nil {
		_ = f.Close()
	}
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_busy_timeout=10000&_foreign_keys=1&_txlock=immediate&_synchronous=FULL")
	if err != nil {
		return nil, fmt.Errorf("payments: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	s := &store{db: db}
	if err := s.migrate(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

func (s *store) migrate(ctx context.Context) error {
	var v int
	if err := s.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("payments: schema version: %w", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("payments: store has schema version %d, newer than this program's %d", v, len(migrations))
	}
	for ; v < len(migrations); v++ {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("payments: migrate: %w", err)
		}
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("payments: migration %d: %w", v+1, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version=%d", v+1)); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("payments: migrate: %w", err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("payments: migrate: %w", err)
		}
	}
	return nil
}

const tipCols = `id, dir, peer, conversation, amount_msat, memo, state, reason, last_error, attempts, next_ms, mode, peer_ln,
	request_id, invoice_msg, bolt11, payment_hash, preimage, fee_msat, keysend, receipt, cancel_inv,
	created_ms, updated_ms, paying_ms, done_ms, cancel_hash`

func scanTip(sc interface{ Scan(...any) error }) (*Tip, error) {
	var t Tip
	var dir, state, mode string
	var created, updated, paying, done int64
	if err := sc.Scan(&t.ID, &dir, &t.Peer, &t.Conversation, &t.AmountMsat, &t.Memo, &state, &t.Reason, &t.LastError,
		&t.attempts, &t.nextMs, &mode, &t.PeerLNNode, &t.RequestID, &t.InvoiceMessageID, &t.Invoice, &t.PaymentHash,
		&t.preimage, &t.FeeMsat, &t.Keysend, &t.ReceiptReceived, &t.cancelInvoice, &created, &updated, &paying, &done, &t.cancelHash); err != nil {
		return nil, err
	}
	t.Outgoing = dir == "out"
	t.State, t.Mode = State(state), Mode(mode)
	t.CreatedAt, t.UpdatedAt = time.UnixMilli(created), time.UnixMilli(updated)
	if paying > 0 {
		t.PayingAt = time.UnixMilli(paying)
	}
	if done > 0 {
		t.DoneAt = time.UnixMilli(done)
	}
	if t.State == StatePaid || t.State == StateSettled {
		t.Preimage = t.preimage // revealed once paid
	}
	return &t, nil
}

type querier interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
}

func getTip(ctx context.Context, q querier, id, dir, peer string) (*Tip, error) {
	t, err := scanTip(q.QueryRowContext(ctx, `SELECT `+tipCols+` FROM tips WHERE id = ? AND dir = ? AND peer = ?`, id, dir, peer))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return t, err
}

func queryTips(ctx context.Context, q querier, where string, args ...any) ([]*Tip, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+tipCols+` FROM tips `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Tip
	for rows.Next() {
		t, err := scanTip(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

func cursor(ctx context.Context, q querier, name string) (uint64, error) {
	var v int64
	err := q.QueryRowContext(ctx, `SELECT value FROM cursors WHERE name = ?`, name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return uint64(v), err
}

func setCursorMax(ctx context.Context, q querier, name string, v uint64) error {
	if v == 0 {
		return nil
	}
	_, err := q.ExecContext(ctx, `INSERT INTO cursors(name, value) VALUES(?, ?)
		ON CONFLICT(name) DO UPDATE SET value = max(value, excluded.value)`, name, int64(v))
	return err
}
