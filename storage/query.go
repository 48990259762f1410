package storage

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nbd-wtf/go-nostr"
)

// Visibility restricts private kinds: an event whose kind is in PrivateKinds
// is returned only if it has a "p" tag whose value is in Readers (hex
// pubkeys). Empty Readers => no private events at all.
type Visibility struct {
	PrivateKinds []int
	Readers      []string
}

// Query returns the events matching f, newest first (created_at DESC, then id
// ASC). See QueryRaw for the rules.
func (s *Store) Query(ctx context.Context, f nostr.Filter, v Visibility) ([]*nostr.Event, error) {
	var out []*nostr.Event
	err := s.QueryRaw(ctx, f, v, func(raw []byte) error {
		evt := &nostr.Event{}
		if err := evt.UnmarshalJSON(raw); err != nil {
			return fmt.Errorf("storage: decode stored event: %w", err)
		}
		out = append(out, evt)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// QueryRaw calls fn with the stored canonical JSON of each event matching f,
// newest first (created_at DESC, then id ASC for ties). fn must not retain
// raw; an error from fn stops the query and is returned.
//
// f.LimitZero returns nothing; f.Limit > 0 is honoured; otherwise
// Options.DefaultLimit applies. Expired events (NIP-40) and private events
// not visible per v are excluded. Tag filters are served for single-letter
// tag names only (others match nothing). f.Search is ignored. As in
// nostr.Filter.Matches, a non-nil but empty IDs/Authors/Kinds/tag-values list
// matches nothing.
func (s *Store) QueryRaw(ctx context.Context, f nostr.Filter, v Visibility, fn func(raw []byte) error) error {
	if f.LimitZero {
		return nil
	}
	limit := f.Limit
	if limit <= 0 {
		limit = s.opts.DefaultLimit
	}
	if f.Kinds == nil && f.IDs == nil && len(f.Tags) == 0 && len(f.Authors) > 0 && len(f.Authors) <= maxMergeArms {
		// Name the authors' kinds, so that the query can merge one arm
		// per (author, kind) instead of sorting all the authors' events.
		// An event of a kind new to them, stored between the two queries,
		// is left out, as if the query had run before it was stored.
		kinds, err := s.authorsKinds(ctx, f.Authors, maxMergeArms/len(f.Authors))
		if err != nil {
			return err
		}
		if kinds != nil {
			f.Kinds = kinds
		}
	}
	q, ok := s.buildQuery(f, v, selectRows, true)
	if !ok {
		return nil
	}
	// Walk the index newest first and stop at the limit: no sort of all
	// candidates. Ties on created_at come back in index (insertion) order;
	// NIP-01 wants the lowest id first, fixed below.
	rows, err := s.collect(ctx, q.sql+" ORDER BY "+q.orderCol+" DESC LIMIT ?", append(q.args, limit), limit)
	if err != nil {
		return err
	}
	if len(rows) == limit {
		// The limit may have cut a group of equal created_at: take that
		// group's lowest ids instead of whichever came first in the index.
		last := rows[len(rows)-1].createdAt
		keep := 0
		for keep < len(rows) && rows[keep].createdAt > last {
			keep++
		}
		g := f
		g.Since, g.Until = &[]nostr.Timestamp{nostr.Timestamp(last)}[0], &[]nostr.Timestamp{nostr.Timestamp(last)}[0]
		gq, _ := s.buildQuery(g, v, selectRows, false) // one second: no arms to merge
		group, err := s.collect(ctx, gq.sql+" ORDER BY "+gq.idCol+" ASC LIMIT ?", append(gq.args, limit-keep), limit-keep)
		if err != nil {
			return err
		}
		rows = append(rows[:keep], group...)
	}
	slices.SortStableFunc(rows, func(a, b row) int {
		if a.createdAt != b.createdAt {
			return cmp.Compare(b.createdAt, a.createdAt)
		}
		return bytes.Compare(a.id, b.id)
	})
	for _, r := range rows {
		if err := fn(r.raw); err != nil {
			return err
		}
	}
	return nil
}

// authorsKinds returns the kinds of the events stored by authors, or nil if
// there are more than max of them. An empty list means the authors have no
// events. Each kind costs one seek on events(pubkey, kind, created_at).
func (s *Store) authorsKinds(ctx context.Context, authors []string, max int) ([]int, error) {
	var kinds []int
	for _, a := range uniq(authors) {
		pk, ok := decodeHex32(a)
		if !ok {
			continue
		}
		st, cached, err := s.readStmt(ctx, kindsQuery, 2)
		if err != nil {
			return nil, fmt.Errorf("storage: query: %w", err)
		}
		err = func() error {
			if !cached {
				defer st.Close()
			}
			rs, err := st.QueryContext(ctx, pk, max+1)
			if err != nil {
				return err
			}
			defer rs.Close()
			for rs.Next() {
				var k int
				if err := rs.Scan(&k); err != nil {
					return err
				}
				if !slices.Contains(kinds, k) {
					kinds = append(kinds, k)
				}
			}
			return rs.Err()
		}()
		if err != nil {
			return nil, fmt.Errorf("storage: query: %w", err)
		}
		if len(kinds) > max {
			return nil, nil
		}
	}
	if kinds == nil {
		kinds = []int{}
	}
	return kinds, nil
}

// kindsQuery lists an author's kinds, at most ?2 of them, by skipping from
// one kind to the next on events(pubkey, kind, created_at).
const kindsQuery = `WITH RECURSIVE k(kind) AS (
	SELECT (SELECT kind FROM events WHERE pubkey = ?1 ORDER BY kind LIMIT 1)
	UNION ALL
	SELECT (SELECT kind FROM events WHERE pubkey = ?1 AND kind > k.kind ORDER BY kind LIMIT 1) FROM k WHERE k.kind IS NOT NULL
) SELECT kind FROM k WHERE kind IS NOT NULL LIMIT ?2`

type row struct {
	createdAt int64
	id, raw   []byte
}

// collect runs a query selecting (created_at, id, raw) and copies the rows out.
func (s *Store) collect(ctx context.Context, query string, args []any, sizeHint int) ([]row, error) {
	st, cached, err := s.readStmt(ctx, query, len(args))
	if err != nil {
		return nil, fmt.Errorf("storage: query: %w", err)
	}
	if !cached {
		defer st.Close()
	}
	rs, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: query: %w", err)
	}
	defer rs.Close()
	out := make([]row, 0, min(sizeHint, 1024))
	var id, raw sql.RawBytes
	for rs.Next() {
		var r row
		if err := rs.Scan(&r.createdAt, &id, &raw); err != nil {
			return nil, fmt.Errorf("storage: query: %w", err)
		}
		r.id, r.raw = bytes.Clone(id), bytes.Clone(raw)
		out = append(out, r)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("storage: query: %w", err)
	}
	return out, nil
}

// Count returns how many events match f (NIP-45), ignoring f.Limit and
// f.LimitZero, with the same visibility and expiration rules as Query.
func (s *Store) Count(ctx context.Context, f nostr.Filter, v Visibility) (int64, error) {
	q, ok := s.buildQuery(f, v, selectCount, false)
	if !ok {
		return 0, nil
	}
	return s.count(ctx, q.sql, q.args)
}

// count runs a query that selects one count.
func (s *Store) count(ctx context.Context, query string, args []any) (int64, error) {
	st, cached, err := s.readStmt(ctx, query, len(args))
	if err != nil {
		return 0, fmt.Errorf("storage: count: %w", err)
	}
	if !cached {
		defer st.Close()
	}
	var n int64
	if err := st.QueryRowContext(ctx, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("storage: count: %w", err)
	}
	return n, nil
}

// CountAny counts the events matching any of filters, each once (NIP-45
// with several filters), with Count's rules.
func (s *Store) CountAny(ctx context.Context, filters []nostr.Filter, v Visibility) (int64, error) {
	if len(filters) == 1 {
		return s.Count(ctx, filters[0], v)
	}
	var parts []string
	var args []any
	for _, f := range filters {
		q, ok := s.buildQuery(f, v, selectSeq, false)
		if !ok {
			continue
		}
		parts = append(parts, q.sql)
		args = append(args, q.args...)
	}
	if len(parts) == 0 {
		return 0, nil
	}
	return s.count(ctx, "SELECT count(*) FROM ("+strings.Join(parts, " UNION ")+")", args)
}

type builtQuery struct {
	sql      string // SELECT ... WHERE ..., without ORDER BY or LIMIT
	args     []any
	orderCol string // the created_at column whose index the query walks
	idCol    string // the id column, for NIP-01's tie order
}

type sqlBuilder struct {
	b    strings.Builder
	args []any
}

func (sb *sqlBuilder) w(parts ...string) {
	for _, p := range parts {
		sb.b.WriteString(p)
	}
}

// in writes "(?, ?, ...)" and appends the values.
func (sb *sqlBuilder) in(n int, arg func(i int) any) {
	sb.b.WriteByte('(')
	for i := 0; i < n; i++ {
		if i > 0 {
			sb.b.WriteString(",?")
		} else {
			sb.b.WriteByte('?')
		}
		sb.args = append(sb.args, arg(i))
	}
	sb.b.WriteByte(')')
}

// maxInlineValues is the longest value list written as "IN (?, ...)",
// which the query planner sizes exactly. A longer one is bound as one
// JSON array (see eqOrIn): one frame can carry some 30,000 values, past
// SQLite's limit on bound parameters, and a statement that size takes
// megabytes on each read connection that prepares it. (Statements with
// many arguments are never cached either: see Store.readStmt.)
const maxInlineValues = 256

func (sb *sqlBuilder) eqOrIn(col string, n int, arg func(i int) any) {
	switch {
	case n == 1:
		sb.w(col, " = ?")
		sb.args = append(sb.args, arg(0))
	case n <= maxInlineValues:
		sb.w(col, " IN ")
		sb.in(n, arg)
	default:
		// One JSON array: strings and numbers as they are, byte slices
		// (ids, pubkeys) as hex, turned back into blobs by unhex.
		vals := make([]any, n)
		blobs := false
		for i := range n {
			v := arg(i)
			if b, ok := v.([]byte); ok {
				v, blobs = hex.EncodeToString(b), true
			}
			vals[i] = v
		}
		raw, _ := json.Marshal(vals) // strings and ints only: cannot fail
		if blobs {
			sb.w(col, " IN (SELECT unhex(value) FROM json_each(?))")
		} else {
			sb.w(col, " IN (SELECT value FROM json_each(?))")
		}
		sb.args = append(sb.args, string(raw))
	}
}

type tagCond struct {
	name   string
	values []string
}

// What a built query selects.
const (
	selectRows  = "SELECT e.created_at, e.id, e.raw"
	selectCount = "SELECT count(*)"
	selectSeq   = "SELECT e.seq"
)

// buildQuery turns f and v into SQL selecting sel. ok is false when nothing
// can match. merge allows a query of one arm per (author, kind) pair, merged
// in time order (see mergeable); its orderCol and idCol are then ordinals.
func (s *Store) buildQuery(f nostr.Filter, v Visibility, sel string, merge bool) (builtQuery, bool) {
	var ids, authors [][]byte
	if f.IDs != nil {
		for _, id := range uniq(f.IDs) {
			if b, ok := decodeHex32(id); ok {
				ids = append(ids, b)
			}
		}
		if len(ids) == 0 {
			return builtQuery{}, false
		}
	}
	if f.Authors != nil {
		for _, a := range uniq(f.Authors) {
			if b, ok := decodeHex32(a); ok {
				authors = append(authors, b)
			}
		}
		if len(authors) == 0 {
			return builtQuery{}, false
		}
	}
	var kinds []int
	if f.Kinds != nil {
		kinds = uniq(f.Kinds)
		if len(kinds) == 0 {
			return builtQuery{}, false
		}
	}
	var tags []tagCond
	for name, vals := range f.Tags {
		if vals == nil {
			continue // nostr.Filter.Matches ignores nil value lists
		}
		if len(name) != 1 || len(vals) == 0 {
			return builtQuery{}, false
		}
		// Stored values are valid UTF-8 (the relay refuses others), so an
		// invalid one matches nothing; dropped here, it cannot come back
		// as U+FFFD through a long list's JSON either.
		vals = slices.DeleteFunc(slices.Clone(vals), func(v string) bool { return !utf8.ValidString(v) })
		if len(vals) == 0 {
			return builtQuery{}, false
		}
		tags = append(tags, tagCond{name, uniq(vals)})
	}
	// Drive by the most selective-looking tag: fewest values, then e/p first.
	slices.SortFunc(tags, func(a, b tagCond) int {
		if len(a.values) != len(b.values) {
			return len(a.values) - len(b.values)
		}
		return tagRank(a.name) - tagRank(b.name)
	})
	if f.Since != nil && f.Until != nil && *f.Since > *f.Until {
		return builtQuery{}, false
	}

	// Visibility of private kinds.
	private := uniq(v.PrivateKinds)
	readers := uniq(v.Readers)
	needPrivClause := false
	if len(private) > 0 {
		if kinds != nil {
			var pub, priv []int
			for _, k := range kinds {
				if slices.Contains(private, k) {
					priv = append(priv, k)
				} else {
					pub = append(pub, k)
				}
			}
			switch {
			case len(priv) == 0:
				private = nil
			case len(readers) == 0:
				kinds = pub
				private = nil
				if len(kinds) == 0 {
					return builtQuery{}, false
				}
			default:
				private = priv
				needPrivClause = true
			}
		} else {
			needPrivClause = true
		}
	}

	c := conds{since: f.Since, until: f.Until, tags: tags, now: s.now().Unix(), private: private, readers: readers, byID: len(ids) > 0}
	if !needPrivClause {
		c.private = nil
	}
	c.allPrivate = kinds != nil && len(private) == len(kinds)
	sb := &sqlBuilder{}
	if merge && mergeable(ids, authors, kinds, tags) {
		// One arm per (author, kind): each walks its own stretch of
		// events(pubkey, kind, created_at) newest first, and SQLite merges
		// the arms in time order, stopping at the limit. The IN form would
		// walk events(kind, created_at) past every other author's events
		// (a whole kind, if the authors post rarely), or sort every event
		// of the authors.
		for i, a := range authors {
			for j, k := range kinds {
				if i+j > 0 {
					sb.w(" UNION ALL ")
				}
				sb.w(sel, " FROM events e WHERE e.pubkey = ? AND e.kind = ?")
				sb.args = append(sb.args, a, k)
				c.write(sb, k, false)
			}
		}
		return builtQuery{sql: sb.b.String(), args: sb.args, orderCol: "1", idCol: "2"}, true
	}
	sb.w(sel)
	orderCol := "e.created_at"
	tagJoin := len(ids) == 0 && len(tags) > 0 && len(tags[0].values) == 1
	if tagJoin {
		// Walk the (name, value, created_at) index newest first, join events.
		t := tags[0]
		c.tags = tags[1:]
		orderCol = "t.created_at"
		sb.w(" FROM tags t JOIN events e ON e.seq = t.seq AND e.created_at = t.created_at WHERE t.name = ? AND t.value = ?")
		sb.args = append(sb.args, t.name, t.values[0])
		if f.Since != nil {
			sb.w(" AND t.created_at >= ?")
			sb.args = append(sb.args, int64(*f.Since))
		}
		if f.Until != nil {
			sb.w(" AND t.created_at <= ?")
			sb.args = append(sb.args, int64(*f.Until))
		}
	} else {
		sb.w(" FROM events e WHERE 1")
	}
	if len(ids) > 0 {
		// The id index is the ids table and, for the events stored since
		// the writer last merged, s.recent in memory, read before the
		// statement starts (see recentIDs). An entry there may be stale:
		// the rows are held to the ids as well.
		id := func(i int) any { return ids[i] }
		sb.w(" AND e.seq IN (SELECT seq FROM ids WHERE ")
		sb.eqOrIn("id", len(ids), id)
		if recent := s.recent.seqs(ids, nil); len(recent) > 0 {
			sb.w(" UNION ALL SELECT value FROM json_each(?)) AND ")
			sb.args = append(sb.args, jsonInts(recent))
			sb.eqOrIn("e.id", len(ids), id)
		} else {
			sb.w(")")
		}
	}
	// With ids, the rows are looked up by seq: a unary + keeps the planner
	// from walking an author's or a kind's index past every other event
	// instead (a filter naming ids and kinds would read a whole kind).
	pubkeyCol, kindCol := "e.pubkey", "e.kind"
	if c.byID {
		pubkeyCol, kindCol = "+e.pubkey", "+e.kind"
	}
	if len(authors) > 0 {
		sb.w(" AND ")
		sb.eqOrIn(pubkeyCol, len(authors), func(i int) any { return authors[i] })
	}
	if kinds != nil {
		sb.w(" AND ")
		sb.eqOrIn(kindCol, len(kinds), func(i int) any { return kinds[i] })
	}
	c.write(sb, -1, len(ids) == 0 && !tagJoin)
	return builtQuery{sql: sb.b.String(), args: sb.args, orderCol: orderCol, idCol: "e.id"}, true
}

// maxMergeArms caps the (author, kind) pairs queried as merged arms. An arm
// costs 30–60 µs (planning, a seek, its first row); past about 30 authors
// who post the kind, walking events(kind, created_at) is cheaper
// (docs/performance.md).
const maxMergeArms = 32

// mergeable reports whether a filter is served as one arm per (author, kind)
// pair. Filters with ids or a single tag value have a more selective index.
func mergeable(ids, authors [][]byte, kinds []int, tags []tagCond) bool {
	if len(ids) > 0 || len(authors) == 0 || len(kinds) == 0 || len(authors)*len(kinds) < 2 || len(authors)*len(kinds) > maxMergeArms {
		return false
	}
	if len(tags) > 0 && len(tags[0].values) == 1 {
		return false
	}
	// Every arm repeats the tag values (a long list would be one JSON
	// argument per arm, each parsed again): keep the statement small.
	n := 0
	for _, t := range tags {
		if len(t.values) > maxInlineValues {
			return false
		}
		n += len(t.values)
	}
	return len(authors)*len(kinds)*n <= 4*maxInlineValues
}

// conds are a filter's conditions on each candidate row beyond its ids,
// authors and kinds.
type conds struct {
	since, until *nostr.Timestamp
	tags         []tagCond
	now          int64
	private      []int    // private kinds in play, nil when none can match
	readers      []string // who may read them
	allPrivate   bool     // every kind the filter names is private
	byID         bool     // rows come by id: no condition may pick an index
}

// write appends c to a WHERE clause on e. kind >= 0 says every row has that
// kind (an arm of a merged query); driveTag lets the first tag condition be
// a set of seqs (no index is walked for the row otherwise).
func (c *conds) write(sb *sqlBuilder, kind int, driveTag bool) {
	createdAt := "e.created_at"
	if c.byID {
		createdAt = "+e.created_at"
	}
	if c.since != nil {
		sb.w(" AND ", createdAt, " >= ?")
		sb.args = append(sb.args, int64(*c.since))
	}
	if c.until != nil {
		sb.w(" AND ", createdAt, " <= ?")
		sb.args = append(sb.args, int64(*c.until))
	}
	for i, t := range c.tags {
		if i == 0 && driveTag {
			// Multi-valued driving tag: a set of seqs, no duplicate rows.
			sb.w(" AND e.seq IN (SELECT seq FROM tags WHERE name = ? AND ")
			sb.args = append(sb.args, t.name)
			sb.eqOrIn("value", len(t.values), func(i int) any { return t.values[i] })
			sb.w(")")
			continue
		}
		sb.w(" AND EXISTS (SELECT 1 FROM tags x WHERE x.seq = e.seq AND x.created_at = e.created_at AND x.name = ? AND ")
		sb.args = append(sb.args, t.name)
		sb.eqOrIn("x.value", len(t.values), func(i int) any { return t.values[i] })
		sb.w(")")
	}
	sb.w(" AND (e.expiration IS NULL OR e.expiration > ?)")
	sb.args = append(sb.args, c.now)
	if len(c.private) == 0 || kind >= 0 && !slices.Contains(c.private, kind) {
		return
	}
	readerClause := func() {
		sb.w("EXISTS (SELECT 1 FROM tags r WHERE r.seq = e.seq AND r.created_at = e.created_at AND r.name = 'p' AND ")
		sb.eqOrIn("r.value", len(c.readers), func(i int) any { return c.readers[i] })
		sb.w(")")
	}
	switch {
	case len(c.readers) == 0:
		sb.w(" AND e.kind NOT IN ")
		sb.in(len(c.private), func(i int) any { return c.private[i] })
	case kind >= 0 || c.allPrivate:
		// every row's kind is private
		sb.w(" AND ")
		readerClause()
	default:
		sb.w(" AND (e.kind NOT IN ")
		sb.in(len(c.private), func(i int) any { return c.private[i] })
		sb.w(" OR ")
		readerClause()
		sb.w(")")
	}
}

func tagRank(name string) int {
	switch name {
	case "e":
		return 0
	case "p":
		return 1
	case "a":
		return 2
	default:
		return 3 + int(name[0])
	}
}

func uniq[T comparable](in []T) []T {
	out := make([]T, 0, len(in))
	if len(in) <= 16 {
		for _, x := range in {
			if !slices.Contains(out, x) {
				out = append(out, x)
			}
		}
		return out
	}
	seen := make(map[T]struct{}, len(in))
	for _, x := range in {
		if _, ok := seen[x]; !ok {
			seen[x] = struct{}{}
			out = append(out, x)
		}
	}
	return out
}

// jsonInts is vs as a JSON array, for json_each.
func jsonInts(vs []int64) string {
	b := append(make([]byte, 0, 2+len(vs)*8), '[')
	for i, v := range vs {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, v, 10)
	}
	return string(append(b, ']'))
}
