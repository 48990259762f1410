package chat

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	_ "github.com/mattn/go-sqlite3" // the "sqlite3" driver
	"github.com/nbd-wtf/go-nostr"
)

// migrations: migrations[i] takes the schema from version i to i+1
// (PRAGMA user_version). Never edit a released step; append a new one.
var migrations = []string{
	`CREATE TABLE conversations (
		id           TEXT PRIMARY KEY,      -- hex sha256 of the sorted participant pubkeys
		participants TEXT NOT NULL,         -- JSON array of hex pubkeys, sorted, including ours
		subject      TEXT NOT NULL DEFAULT '',
		disappear_s  INTEGER NOT NULL DEFAULT 0, -- disappearing-messages timer, seconds (0: off)
		last_at      INTEGER NOT NULL DEFAULT 0
	);
	CREATE TABLE messages (
		rumor_id     TEXT PRIMARY KEY,
		conversation TEXT NOT NULL,
		sender       TEXT NOT NULL,
		kind         INTEGER NOT NULL,
		content      TEXT NOT NULL,
		tags         TEXT NOT NULL,         -- JSON
		created_at   INTEGER NOT NULL,
		received_at  INTEGER NOT NULL,
		expires_at   INTEGER NOT NULL DEFAULT 0,
		outgoing     INTEGER NOT NULL,
		read         INTEGER NOT NULL DEFAULT 0
	);
	CREATE INDEX messages_by_conversation ON messages(conversation, created_at);
	CREATE INDEX messages_by_expiry ON messages(expires_at) WHERE expires_at > 0;
	CREATE TABLE deliveries (
		wrap_id     TEXT NOT NULL,
		relay       TEXT NOT NULL,
		rumor_id    TEXT NOT NULL,
		recipient   TEXT NOT NULL,
		self        INTEGER NOT NULL,       -- 1: the sender's own copy
		wrap        TEXT NOT NULL,          -- the signed gift wrap, JSON
		state       TEXT NOT NULL,          -- pending | ok | failed
		attempts    INTEGER NOT NULL DEFAULT 0,
		next_at_ms  INTEGER NOT NULL,
		last_error  TEXT NOT NULL DEFAULT '',
		created_at  INTEGER NOT NULL,
		expires_at  INTEGER NOT NULL DEFAULT 0,
		PRIMARY KEY (wrap_id, relay)
	);
	CREATE INDEX deliveries_due ON deliveries(next_at_ms) WHERE state = 'pending';
	CREATE INDEX deliveries_by_rumor ON deliveries(rumor_id);
	CREATE TABLE seen_wraps (wrap_id TEXT PRIMARY KEY, seen_at INTEGER NOT NULL);
	CREATE TABLE deleted (rumor_id TEXT NOT NULL, sender TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (rumor_id, sender));
	CREATE TABLE contacts (
		pubkey      TEXT PRIMARY KEY,
		handle      TEXT NOT NULL DEFAULT '',
		nip05       TEXT NOT NULL DEFAULT '',
		relays      TEXT NOT NULL DEFAULT '[]', -- relays known for them (hints)
		dm_relays   TEXT NOT NULL DEFAULT '[]', -- their kind 10050 list
		dm_fetched  INTEGER NOT NULL DEFAULT 0,
		verdict     TEXT NOT NULL DEFAULT ''
	);
	CREATE TABLE cursors (relay TEXT PRIMARY KEY, since INTEGER NOT NULL);`,
	// 2: the LND node named by a contact's handle claim; tip messages by kind.
	`ALTER TABLE contacts ADD COLUMN ln_node TEXT NOT NULL DEFAULT '';
	CREATE INDEX messages_by_kind ON messages(kind, created_at) WHERE kind BETWEEN 3790 AND 3793;`,
	// 3: blobs of removed outgoing file messages, to delete from our blob store.
	`CREATE TABLE blobs_to_drop (sha TEXT PRIMARY KEY, url TEXT NOT NULL);`,
}

type store struct {
	db      *sql.DB
	msgStmt *sql.Stmt // message by id: hot (every send, receipt and delivery outcome)
}

func openStore(ctx context.Context, path string) (*store, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("chat: create %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("chat: create %s: %w", path, err)
	}
	u := url.URL{Scheme: "file", Opaque: url.PathEscape(path)}
	// secure_delete: SQLite overwrites what it deletes, so that a copy of
	// the file made later does not hold disappeared or deleted messages.
	dsn := u.String() + "?_journal_mode=WAL&_busy_timeout=10000&_synchronous=NORMAL&_txlock=immediate&_secure_delete=on"
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("chat: open %s: %w", path, err)
	}
	// One connection: the message store is small and this keeps writes
	// serialised without SQLITE_BUSY.
	db.SetMaxOpenConns(1)
	db.SetConnMaxLifetime(0)
	s := &store{db: db}
	if err := s.migrate(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	if s.msgStmt, err = db.PrepareContext(ctx, `SELECT `+messageCols+` FROM messages m WHERE m.rumor_id = ?`); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("chat: prepare: %w", err)
	}
	return s, nil
}

func (s *store) close() error {
	if s.msgStmt != nil {
		_ = s.msgStmt.Close()
	}
	return s.db.Close()
}

func (s *store) migrate(ctx context.Context) error {
	var v int
	if err := s.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("chat: schema version: %w", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("chat: message store has schema version %d, newer than this program's %d", v, len(migrations))
	}
	for ; v < len(migrations); v++ {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("chat: migrate to %d: %w", v+1, err)
		}
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("chat: migrate to %d: %w", v+1, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version=%d", v+1)); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("chat: migrate to %d: %w", v+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("chat: migrate to %d: %w", v+1, err)
		}
	}
	return nil
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// delivery is one gift wrap to one relay.
type delivery struct {
	WrapID, Relay, RumorID, Recipient string
	Self                              bool
	Wrap                              string
	Attempts                          int
	CreatedAt, ExpiresAt              int64
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func upsertConversation(ctx context.Context, x execer, id string, participants []string, subject string, at int64) error {
	_, err := x.ExecContext(ctx, `INSERT INTO conversations(id, participants, subject, last_at) VALUES(?,?,?,?)
		ON CONFLICT(id) DO UPDATE SET last_at = max(last_at, excluded.last_at),
			subject = CASE WHEN excluded.subject != '' THEN excluded.subject ELSE subject END`,
		id, mustJSON(participants), subject, at)
	return err
}

// insertMessage stores m unless it is known or was deleted; it reports
// whether it was new.
func insertMessage(ctx context.Context, tx *sql.Tx, m *Message, receivedAt int64) (bool, error) {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM deleted WHERE rumor_id = ? AND sender = ?`, m.ID, m.Sender).Scan(&n); err != nil {
		return false, err
	}
	if n > 0 {
		return false, nil
	}
	res, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO messages(rumor_id, conversation, sender, kind, content, tags, created_at, received_at, expires_at, outgoing, read)
		VALUES(?,?,?,?,?,?,?,?,?,?,?)`,
		m.ID, m.Conversation, m.Sender, m.Kind, m.Content, mustJSON(m.Tags), m.CreatedAt.Unix(), receivedAt,
		unixOrZero(m.ExpiresAt), m.Outgoing, m.Outgoing)
	if err != nil {
		return false, err
	}
	k, _ := res.RowsAffected()
	return k == 1, nil
}

func unixOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func insertDelivery(ctx context.Context, x execer, d delivery, nowMs int64) error {
	_, err := x.ExecContext(ctx, `INSERT OR IGNORE INTO deliveries(wrap_id, relay, rumor_id, recipient, self, wrap, state, next_at_ms, created_at, expires_at)
		VALUES(?,?,?,?,?,?, 'pending', ?,?,?)`, d.WrapID, d.Relay, d.RumorID, d.Recipient, d.Self, d.Wrap, nowMs, d.CreatedAt, d.ExpiresAt)
	return err
}

// dueDeliveries returns up to limit pending deliveries due by nowMs, the
// earliest first, leaving out those to the relays in skip (being served).
func (s *store) dueDeliveries(ctx context.Context, nowMs int64, limit int, skip []string) ([]delivery, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT wrap_id, relay, rumor_id, recipient, self, wrap, attempts, created_at, expires_at
		FROM deliveries WHERE state = 'pending' AND next_at_ms <= ? AND relay NOT IN (SELECT value FROM json_each(?))
		ORDER BY next_at_ms LIMIT ?`, nowMs, mustJSON(nonNil(skip)), limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []delivery
	for rows.Next() {
		var d delivery
		if err := rows.Scan(&d.WrapID, &d.Relay, &d.RumorID, &d.Recipient, &d.Self, &d.Wrap, &d.Attempts, &d.CreatedAt, &d.ExpiresAt); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// nextDue returns the earliest next_at_ms of a pending delivery to a relay
// not in skip (0: none).
func (s *store) nextDue(ctx context.Context, skip []string) (int64, error) {
	var v sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT min(next_at_ms) FROM deliveries WHERE state = 'pending'
		AND relay NOT IN (SELECT value FROM json_each(?))`, mustJSON(nonNil(skip))).Scan(&v)
	return v.Int64, err
}

func (s *store) setDelivery(ctx context.Context, wrapID, relay, state string, attempts int, nextAtMs int64, lastErr string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE deliveries SET state = ?, attempts = ?, next_at_ms = ?, last_error = ? WHERE wrap_id = ? AND relay = ?`,
		state, attempts, nextAtMs, lastErr, wrapID, relay)
	return err
}

// deliveryPending reports whether a delivery is still waiting to be sent:
// not removed with its message (deleted, expired) nor done since.
func (s *store) deliveryPending(ctx context.Context, wrapID, relay string) (bool, error) {
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM deliveries WHERE wrap_id = ? AND relay = ? AND state = 'pending'`, wrapID, relay).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// ownWrap returns the gift wrap of our own copy of a rumor we sent (it
// opens with our key).
func (s *store) ownWrap(ctx context.Context, rumorID string) (string, error) {
	var w string
	err := s.db.QueryRowContext(ctx, `SELECT wrap FROM deliveries WHERE rumor_id = ? AND self = 1 LIMIT 1`, rumorID).Scan(&w)
	return w, err
}

// replaceWrap puts a new gift wrap in a pending delivery's row; it reports
// false if the row is gone or no longer pending.
func (s *store) replaceWrap(ctx context.Context, wrapID, relay, newID, wrap string) (bool, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE deliveries SET wrap_id = ?, wrap = ? WHERE wrap_id = ? AND relay = ? AND state = 'pending'`,
		newID, wrap, wrapID, relay)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

const messageCols = `m.rumor_id, m.conversation, m.sender, m.kind, m.content, m.tags, m.created_at, m.expires_at, m.outgoing, m.read,
	(SELECT count(DISTINCT relay) FROM deliveries d WHERE d.rumor_id = m.rumor_id AND d.self = 0),
	(SELECT count(DISTINCT relay) FROM deliveries d WHERE d.rumor_id = m.rumor_id AND d.self = 0 AND d.state = 'ok'),
	(SELECT count(DISTINCT relay) FROM deliveries d WHERE d.rumor_id = m.rumor_id AND d.self = 0 AND d.state = 'failed'),
	(SELECT json_group_array(DISTINCT d.last_error) FROM deliveries d WHERE d.rumor_id = m.rumor_id AND d.self = 0 AND d.state = 'failed')`

func scanMessage(sc interface{ Scan(...any) error }) (*Message, error) {
	var m Message
	var tags string
	var created, expires int64
	var d Delivery
	var failedErrs string
	if err := sc.Scan(&m.ID, &m.Conversation, &m.Sender, &m.Kind, &m.Content, &tags, &created, &expires, &m.Outgoing, &m.Read,
		&d.Relays, &d.Acked, &d.Failed, &failedErrs); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(tags), &m.Tags); err != nil {
		return nil, fmt.Errorf("chat: stored tags: %w", err)
	}
	m.CreatedAt = time.Unix(created, 0)
	if expires > 0 {
		m.ExpiresAt = time.Unix(expires, 0)
	}
	if err := json.Unmarshal([]byte(failedErrs), &d.Errors); err != nil {
		return nil, fmt.Errorf("chat: failed deliveries' errors: %w", err)
	}
	if len(d.Errors) == 0 {
		d.Errors = nil
	}
	m.Delivery = d
	m.State = StateReceived
	if m.Outgoing {
		switch {
		case d.Acked > 0:
			m.State = StateSent
		case d.Relays > 0 && d.Failed == d.Relays:
			m.State = StateFailed
		case d.Relays == 0:
			m.State = StateSent // our own copy from another device: delivery unknown here
		default:
			m.State = StateQueued
		}
	}
	m.Subject = tagValue(m.Tags, "subject")
	if m.Kind == KindFileMessage {
		m.File = fileFromTags(m.Content, m.Tags)
	}
	return &m, nil
}

func (s *store) message(ctx context.Context, id string) (*Message, error) {
	m, err := scanMessage(s.msgStmt.QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("chat: message %s: %w", id, ErrNotFound)
	}
	return m, err
}

// history returns up to limit messages of a conversation created before
// before, oldest first. Messages whose disappearing time has passed are
// left out even before the purge deletes them.
func (s *store) history(ctx context.Context, conv string, before time.Time, limit int, now time.Time) ([]*Message, error) {
	if limit <= 0 {
		limit = 100
	}
	b := int64(1 << 62)
	if !before.IsZero() {
		b = before.Unix()
	}
	return s.messages(ctx, `SELECT `+messageCols+` FROM messages m WHERE m.rowid IN (
		SELECT rowid FROM messages WHERE conversation = ? AND created_at < ? AND (expires_at = 0 OR expires_at > ?)
		ORDER BY created_at DESC, rowid DESC LIMIT ?)
		ORDER BY m.created_at, m.rowid`, conv, b, now.Unix(), limit)
}

// tipMessages returns the stored tip messages (KindTipRequest …
// KindTipStatus) created at or after since, oldest first.
func (s *store) tipMessages(ctx context.Context, since int64) ([]*Message, error) {
	return s.messages(ctx, `SELECT `+messageCols+` FROM messages m
		WHERE m.kind BETWEEN 3790 AND 3793 AND m.created_at >= ? ORDER BY m.created_at, m.rowid`, since)
}

// messages runs a query selecting messageCols and scans the rows.
func (s *store) messages(ctx context.Context, query string, args ...any) ([]*Message, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Message
	for rows.Next() {
		m, err := scanMessage(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

func (s *store) conversations(ctx context.Context) ([]*Conversation, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT c.id, c.participants, c.subject, c.disappear_s, c.last_at,
		(SELECT count(*) FROM messages m WHERE m.conversation = c.id AND m.read = 0),
		(SELECT count(*) FROM messages m WHERE m.conversation = c.id)
		FROM conversations c ORDER BY c.last_at DESC, c.id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Conversation
	for rows.Next() {
		var c Conversation
		var parts string
		var dis, last int64
		if err := rows.Scan(&c.ID, &parts, &c.Subject, &dis, &last, &c.Unread, &c.Messages); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(parts), &c.Participants); err != nil {
			return nil, fmt.Errorf("chat: stored participants: %w", err)
		}
		c.Disappear = time.Duration(dis) * time.Second
		c.LastAt = time.Unix(last, 0)
		out = append(out, &c)
	}
	return out, rows.Err()
}

func (s *store) conversation(ctx context.Context, id string) (participants []string, disappear time.Duration, err error) {
	var parts string
	var dis int64
	err = s.db.QueryRowContext(ctx, `SELECT participants, disappear_s FROM conversations WHERE id = ?`, id).Scan(&parts, &dis)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, fmt.Errorf("chat: conversation %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, 0, err
	}
	if err := json.Unmarshal([]byte(parts), &participants); err != nil {
		return nil, 0, err
	}
	return participants, time.Duration(dis) * time.Second, nil
}

func (s *store) markRead(ctx context.Context, conv string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE messages SET read = 1 WHERE conversation = ? AND read = 0`, conv)
	return err
}

func (s *store) setDisappear(ctx context.Context, conv string, participants []string, d time.Duration) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if err := upsertConversation(ctx, tx, conv, participants, "", 0); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE conversations SET disappear_s = ? WHERE id = ?`, int64(d/time.Second), conv); err != nil {
		return err
	}
	return tx.Commit()
}

// deleteMessage removes rumorID if sender wrote it and remembers the
// deletion (a copy arriving later stays deleted). It reports whether a stored
// message was removed and its conversation.
func deleteMessage(ctx context.Context, tx *sql.Tx, rumorID, sender string, at int64) (string, bool, error) {
	if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO deleted(rumor_id, sender, at) VALUES(?,?,?)`, rumorID, sender, at); err != nil {
		return "", false, err
	}
	var conv string
	var r removed
	err := tx.QueryRowContext(ctx, `DELETE FROM messages WHERE rumor_id = ? AND sender = ? RETURNING conversation, kind, outgoing, content, tags`,
		rumorID, sender).Scan(&conv, &r.kind, &r.outgoing, &r.content, &r.tags)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	if err := keepBlobToDrop(ctx, tx, r); err != nil {
		return "", false, err
	}
	// Stop delivering it if it is still queued somewhere, and drop the
	// wraps kept for it (the sender's own copy opens with our key).
	if _, err := tx.ExecContext(ctx, `DELETE FROM deliveries WHERE rumor_id = ?`, rumorID); err != nil {
		return "", false, err
	}
	if err := resetSubject(ctx, tx, conv); err != nil {
		return "", false, err
	}
	return conv, true, nil
}

// resetSubject sets a conversation's subject to the newest one its
// remaining messages carry (empty when none: NIP-17 has the newest subject
// name the conversation): the subject of a deleted or expired message must
// not outlive it.
func resetSubject(ctx context.Context, x execer, conv string) error {
	_, err := x.ExecContext(ctx, `UPDATE conversations SET subject = COALESCE((
		SELECT json_extract(t.value, '$[1]') FROM messages m, json_each(m.tags) t
		WHERE m.conversation = ?1 AND json_extract(t.value, '$[0]') = 'subject' AND json_type(t.value, '$[1]') = 'text'
		ORDER BY m.created_at DESC, m.rumor_id DESC LIMIT 1), '') WHERE id = ?1`, conv)
	return err
}

// purgeExpired deletes messages whose expiration has passed, and outbox
// entries whose wrap has expired. It returns the removed messages' ids and
// conversations.
func (s *store) purgeExpired(ctx context.Context, now int64) (map[string]string, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback() }()
	rows, err := tx.QueryContext(ctx, `DELETE FROM messages WHERE expires_at > 0 AND expires_at <= ?
		RETURNING rumor_id, conversation, kind, outgoing, content, tags`, now)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	var files []removed
	for rows.Next() {
		var id, conv string
		var r removed
		if err := rows.Scan(&id, &conv, &r.kind, &r.outgoing, &r.content, &r.tags); err != nil {
			rows.Close()
			return nil, err
		}
		out[id] = conv
		files = append(files, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, r := range files {
		if err := keepBlobToDrop(ctx, tx, r); err != nil {
			return nil, err
		}
	}
	for conv := range convs(out) {
		if err := resetSubject(ctx, tx, conv); err != nil {
			return nil, err
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM deliveries WHERE expires_at > 0 AND expires_at <= ?`, now); err != nil {
		return nil, err
	}
	// Seen-wrap ids only need to outlive the back-dating window plus the wraps' lifetime on relays.
	if _, err := tx.ExecContext(ctx, `DELETE FROM seen_wraps WHERE seen_at < ?`, now-int64(30*24*time.Hour/time.Second)); err != nil {
		return nil, err
	}
	return out, tx.Commit()
}

// scrub moves the WAL into the database file and empties it: with
// secure_delete, what was deleted is then gone from both files (the WAL
// otherwise keeps old page images until it is overwritten).
func (s *store) scrub(ctx context.Context) error {
	_, err := s.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
	return err
}

// removed is what a removed message leaves to clean up.
type removed struct {
	kind          int
	outgoing      bool
	content, tags string
}

// keepBlobToDrop queues the blob of a removed file message we sent (its URL
// and hash) for deletion from our blob store (Service.dropBlobs), in the
// transaction that removes the message: a crash in between does not keep
// the blob for good.
func keepBlobToDrop(ctx context.Context, x execer, r removed) error {
	if r.kind != KindFileMessage || !r.outgoing {
		return nil
	}
	var tags nostr.Tags
	if json.Unmarshal([]byte(r.tags), &tags) != nil {
		return nil
	}
	sha := tagValue(tags, "x")
	if !isHash(sha) {
		return nil
	}
	_, err := x.ExecContext(ctx, `INSERT OR IGNORE INTO blobs_to_drop(sha, url) VALUES(?, ?)`, sha, r.content)
	return err
}

func (s *store) blobsToDrop(ctx context.Context) (map[string]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT sha, url FROM blobs_to_drop`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var sha, url string
		if err := rows.Scan(&sha, &url); err != nil {
			return nil, err
		}
		out[sha] = url
	}
	return out, rows.Err()
}

func (s *store) blobDropped(ctx context.Context, sha string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM blobs_to_drop WHERE sha = ?`, sha)
	return err
}

// convs is the set of conversations of removed messages (id → conversation).
func convs(removed map[string]string) map[string]bool {
	out := make(map[string]bool, len(removed))
	for _, c := range removed {
		out[c] = true
	}
	return out
}

func (s *store) seen(ctx context.Context, wrapID string) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM seen_wraps WHERE wrap_id = ?`, wrapID).Scan(&n)
	return n > 0, err
}

func markSeen(ctx context.Context, x execer, wrapID string, now int64) error {
	_, err := x.ExecContext(ctx, `INSERT OR IGNORE INTO seen_wraps(wrap_id, seen_at) VALUES(?,?)`, wrapID, now)
	return err
}

func (s *store) cursor(ctx context.Context, relay string) (int64, error) {
	var v int64
	err := s.db.QueryRowContext(ctx, `SELECT since FROM cursors WHERE relay = ?`, relay).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return v, err
}

func (s *store) setCursor(ctx context.Context, relay string, since int64) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO cursors(relay, since) VALUES(?,?) ON CONFLICT(relay) DO UPDATE SET since = excluded.since`, relay, since)
	return err
}

func (s *store) contact(ctx context.Context, pubkey string) (*Contact, int64, error) {
	c := &Contact{PubKey: pubkey}
	var relays, dm string
	var fetched int64
	err := s.db.QueryRowContext(ctx, `SELECT handle, nip05, relays, dm_relays, dm_fetched, verdict, ln_node FROM contacts WHERE pubkey = ?`, pubkey).
		Scan(&c.Handle, &c.NIP05, &relays, &dm, &fetched, &c.Verdict, &c.LNNode)
	if errors.Is(err, sql.ErrNoRows) {
		return c, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	_ = json.Unmarshal([]byte(relays), &c.Relays)
	_ = json.Unmarshal([]byte(dm), &c.DMRelays)
	return c, fetched, nil
}

// saveContact merges what is known: non-empty fields replace stored ones;
// with a handle, its verdict (empty or not) and node replace the stored ones.
func (s *store) saveContact(ctx context.Context, c *Contact, dmFetched int64) error {
	relays := mustJSON(nonNil(c.Relays))
	dm := mustJSON(nonNil(c.DMRelays))
	_, err := s.db.ExecContext(ctx, `INSERT INTO contacts(pubkey, handle, nip05, relays, dm_relays, dm_fetched, verdict, ln_node) VALUES(?,?,?,?,?,?,?,?)
		ON CONFLICT(pubkey) DO UPDATE SET
			handle = CASE WHEN excluded.handle != '' THEN excluded.handle ELSE handle END,
			nip05 = CASE WHEN excluded.nip05 != '' THEN excluded.nip05 ELSE nip05 END,
			relays = CASE WHEN excluded.relays != '[]' THEN excluded.relays ELSE relays END,
			dm_relays = CASE WHEN excluded.dm_fetched > 0 THEN excluded.dm_relays ELSE dm_relays END,
			dm_fetched = max(dm_fetched, excluded.dm_fetched),
			verdict = CASE WHEN excluded.handle != '' OR excluded.verdict != '' THEN excluded.verdict ELSE verdict END,
			ln_node = CASE WHEN excluded.handle != '' THEN excluded.ln_node ELSE ln_node END`,
		c.PubKey, c.Handle, c.NIP05, relays, dm, dmFetched, c.Verdict, c.LNNode)
	return err
}

// forgetHandle takes handle from every contact but holder ("" for none):
// a rotation moved it to another key, or it was revoked, and what the old
// key's claim said (handle, node, verdict) no longer applies to that key.
func (s *store) forgetHandle(ctx context.Context, handle, holder string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE contacts SET handle = '', ln_node = '', verdict = '' WHERE handle = ? AND pubkey != ?`, handle, holder)
	return err
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func tagValue(tags nostr.Tags, name string) string {
	t := tags.Find(name)
	if len(t) < 2 {
		return ""
	}
	return t[1]
}
