package anchor

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"

	_ "github.com/mattn/go-sqlite3" // SQLite driver
)

// migrations[i] takes the schema from version i to i+1 (PRAGMA
// user_version). Never edit a released migration; append a new one.
var migrations = []string{
	// 1: claims, batches (one per anchor root), every tx version of a batch
	// (original and RBF replacements), attestation events.
	`CREATE TABLE claims (
		seq          INTEGER PRIMARY KEY AUTOINCREMENT,
		id           TEXT NOT NULL UNIQUE,
		kind         INTEGER NOT NULL,
		handle       TEXT NOT NULL,
		pubkey       TEXT NOT NULL,
		event        TEXT NOT NULL,
		submitted_at INTEGER NOT NULL,
		batch_id     INTEGER REFERENCES batches(id),
		leaf_index   INTEGER
	);
	CREATE INDEX claims_pending ON claims(batch_id, seq);
	CREATE INDEX claims_handle ON claims(handle);
	CREATE INDEX claims_pubkey ON claims(pubkey);
	CREATE TABLE batches (
		id           INTEGER PRIMARY KEY AUTOINCREMENT,
		root         BLOB NOT NULL UNIQUE,
		leaf_count   INTEGER NOT NULL,
		state        TEXT NOT NULL CHECK (state IN ('broadcast', 'mined', 'attested')),
		created_at   INTEGER NOT NULL,
		scan_height  INTEGER NOT NULL,
		txid         TEXT NOT NULL,
		raw_tx       BLOB NOT NULL,
		fee          INTEGER NOT NULL,
		broadcast_at INTEGER NOT NULL,
		bumps        INTEGER NOT NULL DEFAULT 0,
		block_hash   TEXT,
		height       INTEGER,
		tx_index     INTEGER,
		mined_txid   TEXT,
		mined_tx     BLOB
	);
	CREATE TABLE batch_txs (
		txid       TEXT PRIMARY KEY,
		batch_id   INTEGER NOT NULL REFERENCES batches(id),
		raw_tx     BLOB NOT NULL,
		fee        INTEGER NOT NULL,
		created_at INTEGER NOT NULL
	);
	CREATE TABLE attestations (
		claim_id  TEXT PRIMARY KEY REFERENCES claims(id),
		batch_id  INTEGER NOT NULL REFERENCES batches(id),
		event     TEXT NOT NULL,
		published INTEGER NOT NULL DEFAULT 0
	);
	CREATE INDEX attestations_batch ON attestations(batch_id);`,
	// 2: evidence kept from verifications (Verdict.Evidence): claims and
	// attestation events by handle, so a relay flood cannot hide them later.
	`CREATE TABLE evidence (
		handle  TEXT NOT NULL,
		id      TEXT NOT NULL,
		pubkey  TEXT NOT NULL, -- the claim's key (of the embedded claim for an attestation)
		event   TEXT NOT NULL,
		kept_at INTEGER NOT NULL,
		PRIMARY KEY (handle, id)
	) WITHOUT ROWID;
	CREATE INDEX evidence_pubkey ON evidence(pubkey);`,
	// 3: the hash of the block at scan_height, so a scan notices when a
	// reorg replaced blocks it already read (the tx may be mined there).
	`ALTER TABLE batches ADD COLUMN scan_hash TEXT;`,
}

// SchemaVersion is the schema version this code writes.
var SchemaVersion = len(migrations)

func openDB(ctx context.Context, path string) (*sql.DB, error) {
	// Create the file 0600 before SQLite does (it would use 0644).
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("anchor: open store: %w", err)
	}
	_ = f.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("anchor: chmod store: %w", err)
	}
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "FULL")
	q.Set("_busy_timeout", "5000")
	q.Set("_foreign_keys", "on")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite3", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("anchor: open store: %w", err)
	}
	db.SetMaxOpenConns(1) // one writer; the batcher serialises its work anyway
	if err := migrate(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

func migrate(ctx context.Context, db *sql.DB) error {
	var v int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("anchor: schema version: %w", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("anchor: store schema version %d is newer than this program's %d", v, len(migrations))
	}
	for ; v < len(migrations); v++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("anchor: migrate: %w", err)
		}
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			tx.Rollback()
			return fmt.Errorf("anchor: migration %d: %w", v+1, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version=%d", v+1)); err != nil {
			tx.Rollback()
			return fmt.Errorf("anchor: migration %d: %w", v+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("anchor: migration %d: %w", v+1, err)
		}
	}
	return nil
}
