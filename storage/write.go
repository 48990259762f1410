package storage

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/anchorchat/anchorchat/internal/eventsig"
	"github.com/nbd-wtf/go-nostr"
)

// request is one unit of work for the writer goroutine: an event to save, or a
// job (e.g. sweeping expired events) run inside a transaction of its own.
type request struct {
	evt  *nostr.Event
	done func(error)

	// prepared off the writer goroutine
	err    error // validation error: reported without touching the DB
	skip   bool  // ephemeral: acknowledged without storing
	id     []byte
	pubkey []byte
	raw    []byte
	exp    any    // int64 or nil
	dtag   any    // string or nil
	dstr   string // dtag as a string ("" if none)
	tags   [][2]string

	job func(w *writer) error
}

// Save queues evt to the writer goroutine and blocks until the transaction
// containing it has committed (or it was rejected). The caller must already
// have verified the event's id and signature.
func (s *Store) Save(ctx context.Context, evt *nostr.Event) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: save: %w", err)
	}
	ch := make(chan error, 1)
	return s.submit(ctx, s.prepare(evt, func(err error) { ch <- err }), ch, "save")
}

// submit queues req, whose done sends to ch, and waits for its result. If ctx
// ends first the request may still run; we just stop waiting.
func (s *Store) submit(ctx context.Context, req *request, ch <-chan error, what string) error {
	if err := s.enqueue(ctx, req); err != nil {
		return err
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return fmt.Errorf("storage: %s: %w", what, ctx.Err())
	}
}

// SaveAsync queues evt and returns, at once unless the queue is full (it then
// waits for room); done is called exactly once, from the store's notifier
// goroutine (in commit order), after the transaction holding evt committed
// (or with the error). If the store is already closed, done(ErrClosed) is
// called synchronously, from the caller's goroutine. done must not wait for
// the store (Save, SweepExpired, nor SaveAsync, which may wait for room in
// the queue): the notifier would deadlock.
func (s *Store) SaveAsync(evt *nostr.Event, done func(error)) {
	if done == nil {
		done = func(error) {}
	}
	req := s.prepare(evt, done)
	if err := s.enqueue(context.Background(), req); err != nil {
		done(err)
	}
}

func (s *Store) enqueue(ctx context.Context, req *request) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	select {
	case s.queue <- req:
		return nil
	default:
	}
	select {
	case s.queue <- req:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("storage: save: %w", ctx.Err())
	}
}

// prepare does all per-event work that does not need the database, so that it
// runs on the caller's goroutine rather than the single writer.
func (s *Store) prepare(evt *nostr.Event, done func(error)) *request {
	req := &request{evt: evt, done: done}
	if evt == nil {
		req.err = fmt.Errorf("%w: nil event", ErrInvalid)
		return req
	}
	if nostr.IsEphemeralKind(evt.Kind) {
		req.skip = true
		return req
	}
	if !ValidUTF8(evt) {
		req.err = fmt.Errorf("%w: strings must be valid UTF-8", ErrInvalid)
		return req
	}
	var ok bool
	if req.id, ok = decodeHex32(evt.ID); !ok {
		req.err = fmt.Errorf("%w: bad id", ErrInvalid)
		return req
	}
	if req.pubkey, ok = decodeHex32(evt.PubKey); !ok {
		req.err = fmt.Errorf("%w: bad pubkey", ErrInvalid)
		return req
	}
	if evt.Kind < 0 || evt.Kind > 65535 {
		req.err = fmt.Errorf("%w: bad kind", ErrInvalid)
		return req
	}
	var gotExp, gotD bool
	for _, t := range evt.Tags {
		if len(t) < 2 {
			continue
		}
		switch {
		case len(t[0]) == 1:
			if t[0] == "d" && !gotD {
				gotD = true
				req.dstr = t[1]
			}
			dup := false
			for _, have := range req.tags {
				if have[0] == t[0] && have[1] == t[1] {
					dup = true
					break
				}
			}
			if !dup {
				req.tags = append(req.tags, [2]string{t[0], t[1]})
			}
		case t[0] == "expiration" && !gotExp:
			gotExp = true
			if e, err := strconv.ParseInt(t[1], 10, 64); err == nil {
				req.exp = e
				if e <= s.now().Unix() {
					req.err = ErrExpired
					return req
				}
			}
		}
	}
	switch {
	case nostr.IsAddressableKind(evt.Kind):
		req.dtag = req.dstr
	case nostr.IsReplaceableKind(evt.Kind):
		req.dstr = ""
		req.dtag = ""
	default:
		req.dstr = ""
	}
	req.raw = EncodeEvent(evt)
	return req
}

// EncodeEvent is the JSON the store keeps and serves for evt: the NIP-01
// object with its strings escaped as for the id serialization, so that
// decoding it gives back exactly the bytes that were signed. One allocation,
// sized up front. The relay sends live events in the same encoding.
func EncodeEvent(evt *nostr.Event) []byte {
	size := 160 + len(evt.ID) + len(evt.PubKey) + len(evt.Sig) + len(evt.Content)
	for _, t := range evt.Tags {
		size += 3
		for _, v := range t {
			size += len(v) + 3
		}
	}
	b := make([]byte, 0, size)
	b = append(b, `{"kind":`...)
	b = strconv.AppendInt(b, int64(evt.Kind), 10)
	b = append(b, `,"id":`...)
	b = eventsig.AppendString(b, evt.ID)
	b = append(b, `,"pubkey":`...)
	b = eventsig.AppendString(b, evt.PubKey)
	b = append(b, `,"created_at":`...)
	b = strconv.AppendInt(b, int64(evt.CreatedAt), 10)
	b = append(b, `,"tags":`...)
	b = eventsig.AppendTags(b, evt.Tags)
	b = append(b, `,"content":`...)
	b = eventsig.AppendString(b, evt.Content)
	b = append(b, `,"sig":`...)
	b = eventsig.AppendString(b, evt.Sig)
	return append(b, '}')
}

// ValidUTF8 reports whether the content and every tag of evt are valid
// UTF-8, as JSON text must be. The stored JSON keeps the signed bytes as they
// are, so an event that is not valid UTF-8 is refused rather than stored and
// later sent in a websocket text frame that clients must reject.
func ValidUTF8(evt *nostr.Event) bool {
	if !utf8.ValidString(evt.Content) {
		return false
	}
	for _, t := range evt.Tags {
		for _, v := range t {
			if !utf8.ValidString(v) {
				return false
			}
		}
	}
	return true
}

func decodeHex32(s string) ([]byte, bool) {
	if len(s) != 64 || !isLowerHex(s) {
		return nil, false
	}
	b, err := hex.DecodeString(s)
	return b, err == nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// writer owns the single write connection and its prepared statements.
type writer struct {
	s    *Store
	conn *sql.Conn

	begin, commit, rollback *sql.Stmt

	insRow       *sql.Stmt // the event row, with the seq the writer assigned
	idSeq        *sql.Stmt // an id's seq in ids
	rowHasID     *sql.Stmt // whether the row seq still holds the id
	deletersOf   *sql.Stmt
	coordCurrent *sql.Stmt
	coordDeleted *sql.Stmt
	delSeq       *sql.Stmt
	targetBySeq  *sql.Stmt
	hasTag       *sql.Stmt
	insDeletedID *sql.Stmt
	upsertCoord  *sql.Stmt
	delCoord     *sql.Stmt
	maxSeq       *sql.Stmt
	mergeIDs     *sql.Stmt
	setMerged    *sql.Stmt
	all          []*sql.Stmt
	bulk         *bulk // runs of plain events, through the SQLite C API

	// Tag rows wait here and go in with multi-row inserts (one statement per
	// tagRowsPerInsert rows instead of one per tag). flushTags runs before
	// anything that reads or deletes tags, and before COMMIT.
	// nextSeq is the seq the next stored event gets: set at BEGIN, never
	// below a seq this writer gave before, so that an entry of s.recent
	// cannot come to name another event. merged is ids_merged.seq. pending
	// holds the ids stored by the open transaction, which go into s.recent
	// after its COMMIT; seen is insertRun's scratch set.
	nextSeq, merged int64
	pending         map[[32]byte]int64
	seen            map[[32]byte]struct{}

	pendingTags []tagRow
	tagArgs     []any
	run         []int
	runReqs     []*request
	insTags     [tagRowsPerInsert + 1]*sql.Stmt // by row count, prepared on first use
}

// tagRow is one row of the tags table.
type tagRow struct {
	seq         int64
	name, value string
	createdAt   int64
}

const tagRowsPerInsert = 64

// The statements both write paths share: apply's, one event at a time, and
// bulk's, 64 rows to a statement.
const (
	insertEvents = `INSERT INTO events(seq, id, pubkey, kind, created_at, expiration, dtag, raw) VALUES `
	eventValues  = `(?, ?, ?, ?, ?, ?, ?, ?)`
	insertTags   = `INSERT OR IGNORE INTO tags(seq, name, value, created_at) VALUES `
	tagValues    = `(?, ?, ?, ?)`
)

// claimable is the condition under which the id in column col may go to a
// new event as far as the tables tell: neither merged into ids nor deleted.
// The ids stored since the last merge are in memory (s.recent, w.pending).
func claimable(col string) string {
	return `NOT EXISTS (SELECT 1 FROM ids WHERE id = ` + col + `) AND NOT EXISTS (SELECT 1 FROM deleted_ids WHERE id = ` + col + `)`
}

func newWriter(ctx context.Context, s *Store, conn *sql.Conn) (*writer, error) {
	w := &writer{s: s, conn: conn, pending: make(map[[32]byte]int64), seen: make(map[[32]byte]struct{})}
	for _, p := range []struct {
		dst **sql.Stmt
		sql string
	}{
		{&w.begin, `BEGIN IMMEDIATE`},
		{&w.commit, `COMMIT`},
		{&w.rollback, `ROLLBACK`},
		{&w.insRow, insertEvents + eventValues},
		{&w.idSeq, `SELECT seq FROM ids WHERE id = ?`},
		{&w.rowHasID, `SELECT 1 FROM events WHERE seq = ? AND id = ?`},
		{&w.deletersOf, `SELECT deleter FROM deleted_ids WHERE id = ?`},
		{&w.coordCurrent, `SELECT seq, created_at, id, expiration FROM events WHERE pubkey = ? AND kind = ? AND dtag = ?`},
		{&w.coordDeleted, `SELECT created_at FROM deleted_coords WHERE pubkey = ? AND kind = ? AND dtag = ?`},
		{&w.delSeq, `DELETE FROM events WHERE seq = ?`},
		{&w.targetBySeq, `SELECT pubkey, kind, created_at FROM events WHERE seq = ?`},
		{&w.hasTag, `SELECT 1 FROM tags WHERE seq = ? AND name = ? AND value = ? AND created_at = ? LIMIT 1`},
		{&w.insDeletedID, `INSERT OR IGNORE INTO deleted_ids(id, deleter) VALUES (?, ?)`},
		{&w.upsertCoord, `INSERT INTO deleted_coords(pubkey, kind, dtag, created_at) VALUES (?, ?, ?, ?)
			ON CONFLICT(pubkey, kind, dtag) DO UPDATE SET created_at = max(created_at, excluded.created_at)`},
		{&w.maxSeq, `SELECT coalesce(max(seq), 0) FROM events`},
		{&w.mergeIDs, `INSERT INTO ids(id, seq) SELECT id, seq FROM events WHERE seq > ? ORDER BY id`},
		{&w.setMerged, `UPDATE ids_merged SET seq = ?`},
		{&w.delCoord, `DELETE FROM events WHERE pubkey = ? AND kind = ? AND dtag = ? AND created_at <= ?`},
	} {
		st, err := conn.PrepareContext(ctx, p.sql)
		if err != nil {
			w.close()
			return nil, fmt.Errorf("storage: prepare %q: %w", p.sql, err)
		}
		*p.dst = st
		w.all = append(w.all, st)
	}
	if err := w.loadRecent(ctx); err != nil {
		w.close()
		return nil, err
	}
	var err error
	if w.bulk, err = newBulk(ctx, conn); err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}

func (w *writer) close() error {
	var errs []error
	if w.bulk != nil {
		w.bulk.close() // its statements live on w.conn
	}
	for _, st := range w.all {
		errs = append(errs, st.Close())
	}
	errs = append(errs, w.conn.Close())
	return errors.Join(errs...)
}

// runWriter is the writer goroutine: it drains the queue in batches of up to
// MaxBatch requests, commits each batch as one transaction and hands it to the
// notifier.
func (s *Store) runWriter() {
	defer close(s.writerDone)
	defer close(s.completions)
	for {
		req, ok := <-s.queue
		if !ok {
			return
		}
		batch := append(make([]*request, 0, min(s.opts.MaxBatch, len(s.queue)+1)), req)
		open := true
	drain:
		for len(batch) < s.opts.MaxBatch {
			select {
			case r, ok := <-s.queue:
				if !ok {
					open = false
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		s.requests.Add(int64(len(batch)))
		results := s.w.runBatch(batch, make([]error, 0, len(batch)))
		s.completions <- completion{batch, results}
		s.w.mergeIfDue()
		if !open {
			return
		}
	}
}

// completion is a committed (or failed) batch and each request's result.
type completion struct {
	reqs    []*request
	results []error
}

// runNotifier calls the done callbacks of each completed batch, in commit
// order, off the writer goroutine: a callback that sends an OK or wakes
// subscribers must not hold up the next transaction.
func (s *Store) runNotifier() {
	defer close(s.notifierDone)
	for c := range s.completions {
		for i, r := range c.reqs {
			r.done(c.results[i])
		}
	}
}

// runBatch applies batch in one transaction and returns one result per
// request. If the transaction fails as a whole, each request is retried in a
// transaction of its own so that one bad apple cannot fail the others.
func (w *writer) runBatch(batch []*request, results []error) []error {
	results = results[:0]
	needTx := false
	for _, r := range batch {
		results = append(results, r.err)
		if r.err == nil && !r.skip {
			needTx = true
		}
	}
	if !needTx {
		return results
	}
	start := time.Now()
	err := w.tx(func() error {
		// Runs of plain events (not replaceable, not deletions, not jobs) go
		// in through bulk, one cgo call per run; everything else, in order,
		// one by one.
		run := w.run[:0]
		defer func() { w.run = run[:0] }()
		for i, r := range batch {
			if r.err != nil || r.skip {
				continue
			}
			if r.plain() {
				run = append(run, i)
				continue
			}
			if err := w.insertRun(batch, run, results); err != nil {
				return err
			}
			run = run[:0]
			res, err := w.apply(r)
			if err != nil {
				return err
			}
			results[i] = res
		}
		return w.insertRun(batch, run, results)
	})
	if err == nil {
		if d := time.Since(start); d > time.Second {
			w.s.log.Warn("slow commit", "events", len(batch), "duration", d)
		}
		return results
	}
	w.s.log.Warn("batch transaction failed; retrying events one by one", "events", len(batch), "err", err)
	for i, r := range batch {
		if r.err != nil || r.skip {
			continue
		}
		var res error
		err := w.tx(func() error {
			var err error
			res, err = w.apply(r)
			return err
		})
		if err != nil {
			if r.job != nil {
				results[i] = err
			} else {
				results[i] = fmt.Errorf("error: storage: %w", err)
			}
		} else {
			results[i] = res
		}
	}
	return results
}

// plain reports whether r is an event that only needs inserting: not a job,
// not replaceable or addressable, not a deletion.
func (r *request) plain() bool {
	return r.job == nil && r.dtag == nil && r.evt.Kind != nostr.KindDeletion
}

// insertRun stores the plain events batch[run[i]] through bulk. The run is
// cut at each event whose id is among those stored since the last merge or
// repeats an earlier one in the run; that event goes through apply, which
// sorts out its outcome. Bulk checks each chunk of 64 against ids and
// deleted_ids; a chunk with an id found there goes through apply one event
// at a time, and the chunks after it go back to bulk.
func (w *writer) insertRun(batch []*request, run []int, results []error) error {
	if len(run) == 0 {
		return nil
	}
	if len(run) == 1 {
		res, err := w.apply(batch[run[0]])
		results[run[0]] = res
		return err
	}
	reqs := w.runReqs[:0]
	for _, i := range run {
		reqs = append(reqs, batch[i])
	}
	w.runReqs = reqs
	defer clear(reqs)
	defer w.bulk.reset()
	if err := w.bulk.load(reqs); err != nil {
		return err
	}
	one := func(k int) error {
		res, err := w.apply(reqs[k])
		results[run[k]] = res
		return err
	}
	clear(w.seen)
	for done := 0; done < len(run); {
		// Bulk takes the run up to the first id that is among those stored
		// since the last merge, or earlier in the run: apply sorts it out.
		end := done
		for ; end < len(run); end++ {
			id := [32]byte(reqs[end].id)
			if _, again := w.seen[id]; again || w.isRecent(id) {
				break
			}
			w.seen[id] = struct{}{}
		}
		for done < end {
			n, err := w.bulk.insert(done, end, w.nextSeq)
			if err != nil {
				return err
			}
			for k := done; k < n; k++ {
				w.pending[[32]byte(reqs[k].id)] = w.nextSeq + int64(k-done)
				results[run[k]] = nil
			}
			w.nextSeq += int64(n - done)
			// The chunk at n has an id in ids or deleted_ids: one by one.
			for done = min(end, n+bulkMaxRows); n < done; n++ {
				if err := one(n); err != nil {
					return err
				}
			}
		}
		if end < len(run) {
			if err := one(end); err != nil {
				return err
			}
			done = end + 1
		}
	}
	return nil
}

// isRecent reports whether id was stored since the last merge, by the open
// transaction or a committed one; the event may since have been deleted.
func (w *writer) isRecent(id [32]byte) bool {
	if _, ok := w.pending[id]; ok {
		return true
	}
	_, ok := w.s.recent.get(id[:])
	return ok
}

// findID returns the seq of the stored event with id (32 bytes): among the
// ids stored since the last merge, each checked against its row, else in
// ids.
func (w *writer) findID(id []byte) (int64, bool, error) {
	ctx := context.Background()
	var one int
	p, inPending := w.pending[[32]byte(id)]
	r, inRecent := w.s.recent.get(id)
	for _, c := range []struct {
		seq int64
		ok  bool
	}{{p, inPending}, {r, inRecent}} {
		if !c.ok {
			continue
		}
		err := w.rowHasID.QueryRowContext(ctx, c.seq, id).Scan(&one)
		switch {
		case err == nil:
			return c.seq, true, nil
		case !errors.Is(err, sql.ErrNoRows):
			return 0, false, fmt.Errorf("id lookup: %w", err)
		}
	}
	var seq int64
	err := w.idSeq.QueryRowContext(ctx, id).Scan(&seq)
	switch {
	case err == nil:
		return seq, true, nil
	case errors.Is(err, sql.ErrNoRows):
		return 0, false, nil
	default:
		return 0, false, fmt.Errorf("id lookup: %w", err)
	}
}

// loadRecent reads how far ids has been merged, and indexes in s.recent the
// events stored since.
func (w *writer) loadRecent(ctx context.Context) error {
	if err := w.conn.QueryRowContext(ctx, `SELECT seq FROM ids_merged`).Scan(&w.merged); err != nil {
		return fmt.Errorf("storage: read ids_merged: %w", err)
	}
	rows, err := w.conn.QueryContext(ctx, `SELECT id, seq FROM events WHERE seq > ?`, w.merged)
	if err != nil {
		return fmt.Errorf("storage: load recent ids: %w", err)
	}
	defer rows.Close()
	m := make(map[[32]byte]int64)
	for rows.Next() {
		var id []byte
		var seq int64
		if err := rows.Scan(&id, &seq); err != nil {
			return fmt.Errorf("storage: load recent ids: %w", err)
		}
		if len(id) != 32 {
			return fmt.Errorf("storage: load recent ids: event %d has a %d-byte id", seq, len(id))
		}
		m[[32]byte(id)] = seq
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("storage: load recent ids: %w", err)
	}
	w.s.recent.add(m)
	return nil
}

// lazy returns *slot, preparing q into it on first use; the statement is
// closed with the writer's others.
func (w *writer) lazy(slot **sql.Stmt, q string) (*sql.Stmt, error) {
	if *slot == nil {
		st, err := w.conn.PrepareContext(context.Background(), q)
		if err != nil {
			return nil, fmt.Errorf("prepare %.40q...: %w", q, err)
		}
		*slot = st
		w.all = append(w.all, st)
	}
	return *slot, nil
}

// tagRows is tagValues n times, comma-separated.
func tagRows(n int) string {
	return strings.TrimSuffix(strings.Repeat(tagValues+`, `, n), ", ")
}

// tx runs fn inside BEGIN IMMEDIATE ... COMMIT, rolling back on error.
func (w *writer) tx(fn func() error) error {
	ctx := context.Background() // no per-call goroutine in the driver
	if _, err := w.begin.ExecContext(ctx); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	w.pendingTags = w.pendingTags[:0]
	clear(w.pending)
	var maxSeq int64
	err := w.maxSeq.QueryRowContext(ctx).Scan(&maxSeq)
	w.nextSeq = max(w.nextSeq, maxSeq+1, w.merged+1)
	if err == nil {
		err = fn()
	}
	if err == nil {
		err = w.flushTags()
	}
	if err != nil {
		if _, rerr := w.rollback.ExecContext(ctx); rerr != nil {
			w.s.log.Error("rollback failed", "err", rerr)
		}
		return err
	}
	w.s.commits.Add(1)
	if _, err := w.commit.ExecContext(ctx); err != nil {
		w.s.commits.Add(-1)
		if _, rerr := w.rollback.ExecContext(ctx); rerr != nil {
			w.s.log.Debug("rollback after failed commit", "err", rerr)
		}
		return fmt.Errorf("commit: %w", err)
	}
	// Before any OK for the transaction: a client told its event is stored
	// finds it by id.
	w.s.recent.add(w.pending)
	return nil
}

// mergeAt is the fewest ids s.recent collects before the writer merges them
// into ids: enough that a merge touches each page of ids for many events.
var mergeAt = 16384 // a variable so tests can merge often

// A merge rewrites nearly every page of ids (the new ids fall all over the
// tree), so its cost grows with the tree. Merging a fixed number of ids at a
// time would make each event's share of it grow with the store: past a
// million events the writer saved half as many events per second as at a
// quarter million (BenchmarkSaveAfterFill). Instead a merge is
// due when s.recent holds a quarter as many ids as ids does (as in a
// log-structured merge tree), so the merge cost per event stays bounded, up
// to mergeMax ids in memory (about 100 bytes each, and the events Open reads
// to rebuild s.recent).
const (
	mergeRatio = 4
	mergeMax   = 1 << 17
)

// mergeThreshold is how many ids s.recent holds when a merge is due, for ids
// merged up to seq merged. The seq stands in for the size of ids: it counts
// the replaced and deleted events too, so it errs on the large side.
func mergeThreshold(merged int64) int {
	return max(mergeAt, int(min(merged/mergeRatio, mergeMax)))
}

// mergeIfDue writes the ids of the events stored since the last merge into
// ids, in a transaction of its own, if enough have collected.
func (w *writer) mergeIfDue() {
	if w.s.recent.len() < mergeThreshold(w.merged) {
		return
	}
	ctx := context.Background()
	var upTo int64
	err := w.tx(func() error {
		upTo = w.nextSeq - 1 // every stored event's seq is below nextSeq
		if _, err := w.mergeIDs.ExecContext(ctx, w.merged); err != nil {
			return fmt.Errorf("merge ids: %w", err)
		}
		if _, err := w.setMerged.ExecContext(ctx, upTo); err != nil {
			return fmt.Errorf("merge ids: %w", err)
		}
		return nil
	})
	if err != nil {
		w.s.log.Error("merging recent ids failed; will retry", "err", err)
		return
	}
	w.merged = upTo
	w.s.recent.reset() // after the COMMIT: a reader finds every id in one place or the other
}

// apply stores one event inside the current transaction. The first return is
// the event's outcome (nil, ErrDuplicate, ErrDeleted, ErrReplaced); the second
// is a database failure that aborts the transaction.
func (w *writer) apply(r *request) (error, error) {
	evt := r.evt
	replaceable := r.dtag != nil
	if r.job != nil || replaceable || evt.Kind == nostr.KindDeletion {
		// These read or delete tag rows, perhaps of events earlier in this batch.
		if err := w.flushTags(); err != nil {
			return nil, err
		}
	}
	if r.job != nil {
		return nil, r.job(w)
	}
	ctx := context.Background()
	var olderSeqs []int64

	if replaceable {
		// A deletion of this coordinate at or after this version blocks it.
		var delAt int64
		err := w.coordDeleted.QueryRowContext(ctx, r.pubkey, evt.Kind, r.dstr).Scan(&delAt)
		switch {
		case err == nil:
			if int64(evt.CreatedAt) <= delAt {
				return ErrDeleted, nil
			}
		case errors.Is(err, sql.ErrNoRows):
		default:
			return nil, fmt.Errorf("coordinate deletion lookup: %w", err)
		}
		rows, err := w.coordCurrent.QueryContext(ctx, r.pubkey, evt.Kind, r.dstr)
		if err != nil {
			return nil, fmt.Errorf("replaceable lookup: %w", err)
		}
		var outcome error
		now := w.s.now().Unix()
		for rows.Next() {
			var seq, createdAt int64
			var id []byte
			var exp sql.NullInt64
			if err := rows.Scan(&seq, &createdAt, &id, &exp); err != nil {
				rows.Close()
				return nil, fmt.Errorf("replaceable lookup: %w", err)
			}
			cmp := bytes.Compare(id, r.id)
			switch {
			case exp.Valid && exp.Int64 <= now:
				// Expired (NIP-40) and not yet swept: gone, whatever its
				// date, so it neither blocks this version nor stays.
				olderSeqs = append(olderSeqs, seq)
			case cmp == 0:
				outcome = ErrDuplicate
			case createdAt > int64(evt.CreatedAt) || (createdAt == int64(evt.CreatedAt) && cmp < 0):
				if outcome == nil {
					outcome = ErrReplaced
				}
			default:
				olderSeqs = append(olderSeqs, seq)
			}
		}
		if err := rows.Err(); err != nil {
			rows.Close()
			return nil, fmt.Errorf("replaceable lookup: %w", err)
		}
		rows.Close()
		if outcome != nil {
			return outcome, nil
		}
	}

	if _, found, err := w.findID(r.id); err != nil || found {
		if found {
			return ErrDuplicate, nil
		}
		return nil, err
	}
	if evt.Kind != nostr.KindDeletion { // deletions are never deleted nor blocked
		if outcome, err := w.deletedOutcome(r); err != nil || outcome != nil {
			return outcome, err
		}
	}
	seq := w.nextSeq
	if _, err := w.insRow.ExecContext(ctx, seq, r.id, r.pubkey, evt.Kind, int64(evt.CreatedAt), r.exp, r.dtag, r.raw); err != nil {
		return nil, fmt.Errorf("insert event: %w", err)
	}
	w.nextSeq++
	w.pending[[32]byte(r.id)] = seq
	for _, t := range r.tags {
		w.pendingTags = append(w.pendingTags, tagRow{seq, t[0], t[1], int64(evt.CreatedAt)})
	}
	if len(olderSeqs) > 0 || evt.Kind == nostr.KindDeletion {
		if err := w.flushTags(); err != nil {
			return nil, err
		}
	}
	for _, old := range olderSeqs {
		if _, err := w.delSeq.ExecContext(ctx, old); err != nil {
			return nil, fmt.Errorf("delete replaced event: %w", err)
		}
	}
	if evt.Kind == nostr.KindDeletion {
		if err := w.applyDeletion(r); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// flushTags inserts the pending tag rows.
func (w *writer) flushTags() error {
	rows := w.pendingTags
	for len(rows) > 0 {
		n := min(len(rows), tagRowsPerInsert)
		st, err := w.lazy(&w.insTags[n], insertTags+tagRows(n))
		if err != nil {
			return err
		}
		args := w.tagArgs[:0]
		for _, t := range rows[:n] {
			args = append(args, t.seq, t.name, t.value, t.createdAt)
		}
		w.tagArgs = args
		if _, err := st.ExecContext(context.Background(), args...); err != nil {
			return fmt.Errorf("insert tags: %w", err)
		}
		rows = rows[n:]
	}
	clear(w.tagArgs[:cap(w.tagArgs)]) // keep no strings alive
	clear(w.pendingTags[:cap(w.pendingTags)])
	w.pendingTags = w.pendingTags[:0]
	return nil
}

// deletedOutcome returns ErrDeleted if r's id is in deleted_ids by someone
// allowed to delete r, else nil: a deletion by anyone else does not block it.
func (w *writer) deletedOutcome(r *request) (error, error) {
	ctx := context.Background()
	rows, err := w.deletersOf.QueryContext(ctx, r.id)
	if err != nil {
		return nil, fmt.Errorf("deletion lookup: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var deleter []byte
		if err := rows.Scan(&deleter); err != nil {
			return nil, fmt.Errorf("deletion lookup: %w", err)
		}
		if mayDelete(deleter, r) {
			return ErrDeleted, nil
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("deletion lookup: %w", err)
	}
	return nil, nil
}

// mayDelete reports whether deleter (32-byte pubkey) is allowed to delete the
// event in r: its author, or the recipient of a gift wrap (NIP-59).
func mayDelete(deleter []byte, r *request) bool {
	if r.evt.Kind == nostr.KindDeletion {
		return false
	}
	if bytes.Equal(deleter, r.pubkey) {
		return true
	}
	if r.evt.Kind == nostr.KindGiftWrap {
		hexDeleter := hex.EncodeToString(deleter)
		for _, t := range r.tags {
			if t[0] == "p" && t[1] == hexDeleter {
				return true
			}
		}
	}
	return false
}

// applyDeletion processes the "e" and "a" tags of the kind-5 event in r,
// which has just been inserted.
func (w *writer) applyDeletion(r *request) error {
	ctx := context.Background()
	evt := r.evt
	deleterHex := evt.PubKey
	for _, t := range r.tags {
		switch t[0] {
		case "e":
			target, ok := decodeHex32(t[1])
			if !ok {
				continue
			}
			if _, err := w.insDeletedID.ExecContext(ctx, target, r.pubkey); err != nil {
				return fmt.Errorf("record deletion: %w", err)
			}
			seq, found, err := w.findID(target)
			if err != nil {
				return fmt.Errorf("deletion target: %w", err)
			}
			if !found {
				continue
			}
			var kind, createdAt int64
			var author []byte
			if err := w.targetBySeq.QueryRowContext(ctx, seq).Scan(&author, &kind, &createdAt); err != nil {
				return fmt.Errorf("deletion target lookup: %w", err)
			}
			if kind == int64(nostr.KindDeletion) {
				continue
			}
			allowed := bytes.Equal(author, r.pubkey)
			if !allowed && kind == int64(nostr.KindGiftWrap) {
				var one int
				err := w.hasTag.QueryRowContext(ctx, seq, "p", deleterHex, createdAt).Scan(&one)
				switch {
				case err == nil:
					allowed = true
				case errors.Is(err, sql.ErrNoRows):
				default:
					return fmt.Errorf("deletion p-tag lookup: %w", err)
				}
			}
			if allowed {
				if _, err := w.delSeq.ExecContext(ctx, seq); err != nil {
					return fmt.Errorf("delete event: %w", err)
				}
			}
		case "a":
			kind, pubkey, d, ok := parseCoordinate(t[1])
			if !ok || pubkey != deleterHex {
				continue
			}
			if !nostr.IsReplaceableKind(kind) && !nostr.IsAddressableKind(kind) {
				continue
			}
			if nostr.IsReplaceableKind(kind) {
				d = ""
			}
			at := int64(evt.CreatedAt)
			if _, err := w.upsertCoord.ExecContext(ctx, r.pubkey, kind, d, at); err != nil {
				return fmt.Errorf("record coordinate deletion: %w", err)
			}
			if _, err := w.delCoord.ExecContext(ctx, r.pubkey, kind, d, at); err != nil {
				return fmt.Errorf("delete coordinate: %w", err)
			}
		}
	}
	return nil
}

// parseCoordinate parses "kind:pubkey:d" (d may contain ':'; "kind:pubkey"
// is accepted for replaceable kinds).
func parseCoordinate(a string) (kind int, pubkey, d string, ok bool) {
	parts := strings.SplitN(a, ":", 3)
	if len(parts) < 2 {
		return 0, "", "", false
	}
	k, err := strconv.Atoi(parts[0])
	if err != nil || k < 0 || k > 65535 {
		return 0, "", "", false
	}
	if len(parts[1]) != 64 || !isLowerHex(parts[1]) {
		return 0, "", "", false
	}
	if len(parts) == 3 {
		d = parts[2]
	}
	return k, parts[1], d, true
}

// SweepExpired deletes events whose NIP-40 expiration is <= now and returns
// how many were deleted. It runs on the writer goroutine, in its own
// transaction.
func (s *Store) SweepExpired(ctx context.Context) (int64, error) {
	var n int64
	err := s.runJob(ctx, func(w *writer) error {
		res, err := w.conn.ExecContext(context.Background(),
			`DELETE FROM events WHERE expiration IS NOT NULL AND expiration <= ?`, s.now().Unix())
		if err != nil {
			return fmt.Errorf("sweep expired: %w", err)
		}
		n, _ = res.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, err
	}
	if n > 0 {
		s.log.Info("swept expired events", "count", n)
	}
	return n, nil
}

// runJob runs fn on the writer goroutine inside a transaction of its own and
// waits for it.
func (s *Store) runJob(ctx context.Context, fn func(w *writer) error) error {
	ch := make(chan error, 1)
	return s.submit(ctx, &request{done: func(err error) { ch <- err }, job: fn}, ch, "job")
}
