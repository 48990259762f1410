package storage

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
)

// migrations is the ordered list of schema steps. Step i brings the schema
// from version i to version i+1 (PRAGMA user_version). Never edit a released
// step: append a new one.
var migrations = []string{
	// 1: initial schema.
	`
CREATE TABLE events (
	seq        INTEGER PRIMARY KEY,
	id         BLOB    NOT NULL,  -- 32 bytes
	pubkey     BLOB    NOT NULL,  -- 32 bytes
	kind       INTEGER NOT NULL,
	created_at INTEGER NOT NULL,
	expiration INTEGER,           -- NIP-40, NULL if none
	dtag       TEXT,              -- replaceable: '', addressable: first d tag value, else NULL
	raw        BLOB    NOT NULL   -- canonical JSON as produced by easyjson
);
CREATE UNIQUE INDEX events_id ON events(id);
CREATE INDEX events_pubkey_kind_created ON events(pubkey, kind, created_at);
CREATE INDEX events_kind_created ON events(kind, created_at);
CREATE INDEX events_created ON events(created_at);
CREATE INDEX events_expiration ON events(expiration) WHERE expiration IS NOT NULL;
CREATE INDEX events_coord ON events(pubkey, kind, dtag) WHERE dtag IS NOT NULL;

-- single-letter tags only, one row per distinct (event, name, value)
CREATE TABLE tags (
	seq        INTEGER NOT NULL,  -- events.seq
	name       TEXT    NOT NULL,
	value      TEXT    NOT NULL,
	created_at INTEGER NOT NULL   -- copy of events.created_at, for index ordering
);
CREATE INDEX tags_name_value_created ON tags(name, value, created_at);
CREATE INDEX tags_seq ON tags(seq);

CREATE TRIGGER events_delete_tags AFTER DELETE ON events BEGIN
	DELETE FROM tags WHERE seq = old.seq;
END;

-- NIP-09: event ids named by an "e" tag of a kind-5 event, per deleter.
CREATE TABLE deleted_ids (
	id      BLOB NOT NULL,
	deleter BLOB NOT NULL,
	PRIMARY KEY (id, deleter)
) WITHOUT ROWID;

-- NIP-09: coordinates named by an "a" tag, newest deletion time.
CREATE TABLE deleted_coords (
	pubkey     BLOB    NOT NULL,
	kind       INTEGER NOT NULL,
	dtag       TEXT    NOT NULL,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (pubkey, kind, dtag)
) WITHOUT ROWID;
`,
	// 2: tags as one clustered B-tree instead of a rowid table with two
	// indexes: an insert touches one tree, and a tag query walks the primary
	// key in (name, value, created_at) order. An event's tag rows are found
	// for deletion from its own stored JSON, so no index on seq is needed.
	`
CREATE TABLE tags_v2 (
	name       TEXT    NOT NULL,
	value      TEXT    NOT NULL,
	created_at INTEGER NOT NULL,
	seq        INTEGER NOT NULL,
	PRIMARY KEY (name, value, created_at, seq)
) WITHOUT ROWID;
INSERT OR IGNORE INTO tags_v2(name, value, created_at, seq) SELECT name, value, created_at, seq FROM tags;
DROP TRIGGER events_delete_tags;
DROP TABLE tags;
ALTER TABLE tags_v2 RENAME TO tags;
CREATE TRIGGER events_delete_tags AFTER DELETE ON events BEGIN
	DELETE FROM tags WHERE (name, value, created_at, seq) IN (
		SELECT json_extract(t.value, '$[0]'), json_extract(t.value, '$[1]'), old.created_at, old.seq
		FROM json_each(CAST(old.raw AS TEXT), '$.tags') AS t);
END;
`,
	// 3: the id index as two WITHOUT ROWID trees, log-structured: a new
	// event's id goes into the small recent_ids, whose few pages a commit
	// rewrites, and the writer merges recent_ids into ids (in id order, each
	// page of ids touched once per merge) every few thousand events. A unique
	// index on events(id) took a random page of a large tree per event per
	// commit, the largest part of the WAL. The writer keeps the two disjoint:
	// an id is in at most one of them, and in one of them iff its event is
	// stored.
	`
CREATE TABLE ids (
	id  BLOB    NOT NULL PRIMARY KEY,
	seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE recent_ids (
	id  BLOB    NOT NULL PRIMARY KEY,
	seq INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO ids(id, seq) SELECT id, seq FROM events ORDER BY id;
DROP INDEX events_id;
CREATE TRIGGER events_delete_ids AFTER DELETE ON events BEGIN
	DELETE FROM ids WHERE id = old.id;
	DELETE FROM recent_ids WHERE id = old.id;
END;
`,
	// 4: the recent ids in memory (storage/recent.go) instead of in
	// recent_ids: a commit no longer rewrites recent_ids' pages, up to a
	// hundred per commit, a third of the WAL under ingest. ids_merged.seq
	// is how far the writer has merged: an event is in ids iff its seq is
	// at most that; those above are indexed in memory, rebuilt at Open.
	`
INSERT INTO ids(id, seq) SELECT id, seq FROM recent_ids ORDER BY id;
DROP TRIGGER events_delete_ids;
DROP TABLE recent_ids;
CREATE TRIGGER events_delete_ids AFTER DELETE ON events BEGIN
	DELETE FROM ids WHERE id = old.id;
END;
CREATE TABLE ids_merged (
	one INTEGER PRIMARY KEY CHECK (one = 1),
	seq INTEGER NOT NULL
);
INSERT INTO ids_merged(one, seq) SELECT 1, coalesce(max(seq), 0) FROM events;
`,
}

// SchemaVersion is the schema version this package writes.
var SchemaVersion = len(migrations)

func migrate(ctx context.Context, conn *sql.Conn, log *slog.Logger) error {
	var v int
	if err := conn.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("storage: read schema version: %w", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("storage: database schema version %d is newer than this build supports (%d); refusing to open", v, len(migrations))
	}
	for ; v < len(migrations); v++ {
		if err := migrateStep(ctx, conn, v); err != nil {
			return err
		}
		log.Info("schema migrated", "version", v+1)
	}
	return nil
}

func migrateStep(ctx context.Context, conn *sql.Conn, v int) (err error) {
	// BEGIN IMMEDIATE so two processes cannot both migrate.
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("storage: migration %d: begin: %w", v+1, err)
	}
	defer func() {
		if err != nil {
			conn.ExecContext(context.Background(), "ROLLBACK")
		}
	}()
	var cur int
	if err := conn.QueryRowContext(ctx, "PRAGMA user_version").Scan(&cur); err != nil {
		return fmt.Errorf("storage: migration %d: %w", v+1, err)
	}
	if cur != v {
		return fmt.Errorf("storage: migration %d: schema version changed underneath us (%d)", v+1, cur)
	}
	if _, err := conn.ExecContext(ctx, migrations[v]); err != nil {
		return fmt.Errorf("storage: migration %d: %w", v+1, err)
	}
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version=%d", v+1)); err != nil {
		return fmt.Errorf("storage: migration %d: set version: %w", v+1, err)
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("storage: migration %d: commit: %w", v+1, err)
	}
	return nil
}
