package storage

/*
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

// The SQLite C API, as compiled into this binary by github.com/mattn/go-sqlite3
// (declared here rather than included: the header is not on our include path).
typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;
typedef struct sqlite3_context sqlite3_context;
typedef struct sqlite3_value sqlite3_value;
typedef struct sqlite3_api_routines sqlite3_api_routines;
typedef long long sqlite3_int64;
extern int sqlite3_auto_extension(void (*)(void));
extern int sqlite3_create_function_v2(sqlite3 *, const char *, int, int, void *,
	void (*)(sqlite3_context *, int, sqlite3_value **),
	void (*)(sqlite3_context *, int, sqlite3_value **),
	void (*)(sqlite3_context *), void (*)(void *));
extern sqlite3 *sqlite3_context_db_handle(sqlite3_context *);
extern void sqlite3_result_int64(sqlite3_context *, sqlite3_int64);
extern int sqlite3_prepare_v3(sqlite3 *, const char *, int, unsigned int, sqlite3_stmt **, const char **);
extern int sqlite3_bind_blob(sqlite3_stmt *, int, const void *, int, void (*)(void *));
extern int sqlite3_bind_text(sqlite3_stmt *, int, const char *, int, void (*)(void *));
extern int sqlite3_bind_int64(sqlite3_stmt *, int, sqlite3_int64);
extern int sqlite3_bind_null(sqlite3_stmt *, int);
extern int sqlite3_step(sqlite3_stmt *);
extern sqlite3_int64 sqlite3_column_int64(sqlite3_stmt *, int);
extern int sqlite3_reset(sqlite3_stmt *);
extern int sqlite3_finalize(sqlite3_stmt *);
extern int sqlite3_changes(sqlite3 *);
extern const char *sqlite3_errmsg(sqlite3 *);

#define B_OK 0
#define B_ROW 100
#define B_DONE 101
#define B_UTF8 1
#define B_DETERMINISTIC 0x000000800
#define B_DIRECTONLY 0x000080000
#define B_PREPARE_PERSISTENT 0x01

// anchor_db_handle() returns the connection it runs on, as an integer: how
// the writer finds the sqlite3* under its database/sql connection.
static void anchor_db_handle(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
	sqlite3_result_int64(ctx, (sqlite3_int64)(intptr_t)sqlite3_context_db_handle(ctx));
}

static int anchor_ext_init(sqlite3 *db, char **err, const sqlite3_api_routines *api) {
	return sqlite3_create_function_v2(db, "anchorchat_db_handle", 0, B_UTF8 | B_DIRECTONLY, 0,
		anchor_db_handle, 0, 0, 0);
}

static int anchor_register(void) {
	return sqlite3_auto_extension((void (*)(void))anchor_ext_init);
}

// A multi-row statement shape: prefix, n copies of row joined by ", ", suffix.
enum { B_CHECK, B_EVENTS, B_TAGS, B_NSHAPES };
#define B_MAXROWS 64

typedef struct {
	sqlite3 *db;
	char *sql[B_NSHAPES][3]; // prefix, row, suffix
	sqlite3_stmt *st[B_NSHAPES][B_MAXROWS + 1];
	unsigned char *buf; // the loaded run's ids, pubkeys, raw JSON and tag strings
	size_t cap;
} bulk;

// bulk_reserve makes b->buf hold at least n bytes, returning it (NULL if out
// of memory). The statements bind into b->buf with SQLITE_STATIC: C memory
// that b owns, so no binding ever points into Go memory. A binding may dangle
// after a realloc, but every statement is bound in full before each step.
static unsigned char *bulk_reserve(bulk *b, size_t n) {
	if (n > b->cap) {
		unsigned char *p = realloc(b->buf, n);
		if (!p) return 0;
		b->buf = p;
		b->cap = n;
	}
	return b->buf;
}

// bulk_shrink frees b->buf if it has grown past keep bytes.
static void bulk_shrink(bulk *b, size_t keep) {
	if (b->cap > keep) {
		free(b->buf);
		b->buf = 0;
		b->cap = 0;
	}
}

static int bulk_stmt(bulk *b, int shape, int n, sqlite3_stmt **out) {
	if (b->st[shape][n]) {
		*out = b->st[shape][n];
		return B_OK;
	}
	const char *pre = b->sql[shape][0], *row = b->sql[shape][1], *suf = b->sql[shape][2];
	size_t len = strlen(pre) + (size_t)n * (strlen(row) + 2) + strlen(suf) + 1;
	char *q = malloc(len), *p = q;
	if (!q) return 7; // SQLITE_NOMEM
	p += sprintf(p, "%s", pre);
	for (int i = 0; i < n; i++) p += sprintf(p, i ? ", %s" : "%s", row);
	sprintf(p, "%s", suf);
	int rc = sqlite3_prepare_v3(b->db, q, -1, B_PREPARE_PERSISTENT, &b->st[shape][n], 0);
	free(q);
	*out = b->st[shape][n];
	return rc;
}

// bulk_exec steps st once and resets it.
static int bulk_exec(sqlite3_stmt *st) {
	int rc = sqlite3_step(st);
	int rc2 = sqlite3_reset(st);
	if (rc == B_DONE || rc == B_ROW) return rc2;
	return rc;
}

// Per event in meta (B_META int64s): kind, created_at, has_exp, exp, offset
// of id (32 bytes), pubkey (32) and raw JSON in b->buf, raw length, number of
// tag rows, index of its first tag row. Per tag row in tags (4 int64s): name
// offset and length, value offset and length, in b->buf. Lengths fit an int:
// the caller limits events to far less.
#define B_META 8

// bulk_insert stores the plain events [start, n) in chunks of up to
// B_MAXROWS, event i with seq seq0 + i - start: for each chunk, one
// statement counts its ids already in ids or in deleted_ids, then its rows
// and tag rows go in. The caller has checked the ids against the recent ids
// in memory and against each other. It returns the index after the last
// event it stored; less than n means the chunk starting there has an id
// stored or deleted, and is left to the caller untouched. On an SQLite error
// it returns -1 with *rc set, and -2 if a chunk's rows did not all go in;
// either way the caller rolls the transaction back.
//
// No statement here can abort half done on a constraint (the event and tag
// rows are INSERT OR IGNORE, the event rows are checked by count), so SQLite
// keeps no statement journal for them: a multi-row INSERT that may abort
// copies every existing page it touches into one first.
static int bulk_insert(bulk *b, int start, int n, int64_t seq0, const int64_t *meta, const int64_t *tags, int *rc) {
	const unsigned char *buf = b->buf;
	sqlite3_stmt *st;
	int done = start;
	*rc = B_OK;
	while (done < n) {
		int m = n - done < B_MAXROWS ? n - done : B_MAXROWS;
		const int64_t *ev = meta + (size_t)done * B_META;
		int64_t seq = seq0 + (done - start);
		int brc = B_OK;
		if ((*rc = bulk_stmt(b, B_CHECK, m, &st)) != B_OK) return -1;
		for (int i = 0; i < m; i++) {
			const int64_t *e = ev + (size_t)i * B_META;
			brc |= sqlite3_bind_blob(st, i + 1, buf + e[4], 32, 0);
		}
		if (brc != B_OK) { *rc = brc; return -1; }
		int step = sqlite3_step(st);
		sqlite3_int64 taken = step == B_ROW ? sqlite3_column_int64(st, 0) : 0;
		if ((*rc = sqlite3_reset(st)) != B_OK) return -1;
		if (step != B_ROW) { *rc = step; return -1; }
		if (taken != 0) return done;
		if ((*rc = bulk_stmt(b, B_EVENTS, m, &st)) != B_OK) return -1;
		int ntags = 0;
		for (int i = 0; i < m; i++) {
			const int64_t *e = ev + (size_t)i * B_META;
			int k = 8 * i;
			brc |= sqlite3_bind_int64(st, k + 1, seq + i);
			brc |= sqlite3_bind_blob(st, k + 2, buf + e[4], 32, 0);
			brc |= sqlite3_bind_blob(st, k + 3, buf + e[4] + 32, 32, 0);
			brc |= sqlite3_bind_int64(st, k + 4, e[0]);
			brc |= sqlite3_bind_int64(st, k + 5, e[1]);
			brc |= e[2] ? sqlite3_bind_int64(st, k + 6, e[3]) : sqlite3_bind_null(st, k + 6);
			brc |= sqlite3_bind_null(st, k + 7);
			brc |= sqlite3_bind_blob(st, k + 8, buf + e[4] + 64, (int)e[5], 0);
			ntags += (int)e[6];
		}
		if (brc != B_OK) { *rc = brc; return -1; }
		if ((*rc = bulk_exec(st)) != B_OK) return -1;
		if (sqlite3_changes(b->db) != m) return -2; // a row not stored: its seq taken, a bug
		// Tag rows, B_MAXROWS per statement, each with its event's seq and created_at.
		const int64_t *tag = tags + (size_t)ev[7] * 4;
		int ei = 0, left = (int)ev[6];
		while (ntags > 0) {
			int t = ntags < B_MAXROWS ? ntags : B_MAXROWS;
			if ((*rc = bulk_stmt(b, B_TAGS, t, &st)) != B_OK) return -1;
			for (int j = 0; j < t; j++) {
				while (left == 0) left = (int)ev[(size_t)++ei * B_META + 6];
				const int64_t *e = ev + (size_t)ei * B_META;
				brc |= sqlite3_bind_int64(st, 4 * j + 1, seq + ei);
				brc |= sqlite3_bind_text(st, 4 * j + 2, (const char *)buf + tag[0], (int)tag[1], 0);
				brc |= sqlite3_bind_text(st, 4 * j + 3, (const char *)buf + tag[2], (int)tag[3], 0);
				brc |= sqlite3_bind_int64(st, 4 * j + 4, e[1]);
				tag += 4;
				left--;
			}
			if (brc != B_OK) { *rc = brc; return -1; }
			if ((*rc = bulk_exec(st)) != B_OK) return -1;
			ntags -= t;
		}
		done += m;
	}
	return done;
}

static bulk *bulk_new(sqlite3_int64 handle) {
	bulk *b = calloc(1, sizeof(bulk));
	if (b) b->db = (sqlite3 *)(intptr_t)handle;
	return b;
}

static int bulk_set(bulk *b, int shape, const char *pre, const char *row, const char *suf) {
	b->sql[shape][0] = strdup(pre);
	b->sql[shape][1] = strdup(row);
	b->sql[shape][2] = strdup(suf);
	return b->sql[shape][0] && b->sql[shape][1] && b->sql[shape][2] ? B_OK : 7;
}

static const char *bulk_errmsg(bulk *b) { return sqlite3_errmsg(b->db); }

static void bulk_free(bulk *b) {
	for (int s = 0; s < B_NSHAPES; s++) {
		for (int n = 0; n <= B_MAXROWS; n++) sqlite3_finalize(b->st[s][n]);
		for (int i = 0; i < 3; i++) free(b->sql[s][i]);
	}
	free(b->buf);
	free(b);
}
*/
import "C"

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"unsafe"
)

// registerHandleFunc makes SQLite give every connection opened from now on,
// in this process, the SQL function anchorchat_db_handle() (usable only in
// top-level statements, not in triggers or views): how newBulk finds the
// sqlite3* under the writer's database/sql connection, which go-sqlite3
// does not export. Open calls it before opening any connection.
var registerHandleFunc = sync.OnceValue(func() error {
	if rc := C.anchor_register(); rc != 0 {
		return fmt.Errorf("storage: register anchorchat_db_handle: SQLite error %d", rc)
	}
	return nil
})

// bulk writes runs of plain events through the SQLite C API on the writer's
// own connection, in one cgo call per run instead of several database/sql
// calls (and a cgo call per bound value) per 64 events. Fewer trips through
// cgo also mean the writer goroutine loses its P to sysmon, and queues for it
// again behind the connections' signature checks, once per run rather than
// once per statement.
type bulk struct {
	b    *C.bulk
	meta []int64
	tags []int64
}

const (
	bulkMeta    = C.B_META
	bulkMaxRows = C.B_MAXROWS
)

// newBulk finds conn's sqlite3 handle and prepares the bulk statements on it.
func newBulk(ctx context.Context, conn *sql.Conn) (*bulk, error) {
	var h int64
	if err := conn.QueryRowContext(ctx, "SELECT anchorchat_db_handle()").Scan(&h); err != nil {
		return nil, fmt.Errorf("storage: find the writer's SQLite handle: %w", err)
	}
	cb := C.bulk_new(C.sqlite3_int64(h))
	if cb == nil {
		return nil, fmt.Errorf("storage: bulk writer: out of memory")
	}
	b := &bulk{b: cb}
	shapes := []struct {
		shape            C.int
		pre, row, suffix string
	}{
		{C.B_CHECK, `SELECT count(*) FROM (VALUES `, `(?)`, `) WHERE NOT (` + claimable(`column1`) + `)`},
		// OR IGNORE only so that SQLite keeps no statement journal: the
		// rows are counted, and any row missing fails the run.
		{C.B_EVENTS, `INSERT OR IGNORE` + strings.TrimPrefix(insertEvents, `INSERT`), eventValues, ``},
		{C.B_TAGS, insertTags, tagValues, ``},
	}
	for _, s := range shapes {
		pre, row, suf := C.CString(s.pre), C.CString(s.row), C.CString(s.suffix)
		rc := C.bulk_set(cb, s.shape, pre, row, suf)
		C.free(unsafe.Pointer(pre))
		C.free(unsafe.Pointer(row))
		C.free(unsafe.Pointer(suf))
		if rc != 0 {
			b.close()
			return nil, fmt.Errorf("storage: bulk writer: out of memory")
		}
	}
	return b, nil
}

func (b *bulk) err(rc C.int, what string) error {
	return fmt.Errorf("bulk %s: %s (SQLite error %d)", what, C.GoString(C.bulk_errmsg(b.b)), int(rc))
}

// load copies the plain events reqs where bulk_insert reads them: their
// bytes into C memory, which the statements bind without copying, and their
// offsets and numbers into meta and tags.
func (b *bulk) load(reqs []*request) error {
	size := 0
	for _, r := range reqs {
		size += len(r.id) + len(r.pubkey) + len(r.raw)
		for _, t := range r.tags {
			size += len(t[0]) + len(t[1])
		}
	}
	p := C.bulk_reserve(b.b, C.size_t(size+1))
	if p == nil {
		return fmt.Errorf("bulk: out of memory for %d bytes", size)
	}
	buf := unsafe.Slice((*byte)(unsafe.Pointer(p)), size+1)[:0]
	meta, tags := b.meta[:0], b.tags[:0]
	for _, r := range reqs {
		var hasExp, exp int64
		if v, ok := r.exp.(int64); ok {
			hasExp, exp = 1, v
		}
		off := int64(len(buf))
		buf = append(buf, r.id...)
		buf = append(buf, r.pubkey...)
		buf = append(buf, r.raw...)
		meta = append(meta, int64(r.evt.Kind), int64(r.evt.CreatedAt), hasExp, exp, off, int64(len(r.raw)),
			int64(len(r.tags)), int64(len(tags)/4))
		for _, t := range r.tags {
			nameOff := int64(len(buf))
			buf = append(buf, t[0]...)
			valueOff := int64(len(buf))
			buf = append(buf, t[1]...)
			tags = append(tags, nameOff, int64(len(t[0])), valueOff, int64(len(t[1])))
		}
	}
	b.meta, b.tags = meta, append(tags, 0) // non-empty: C gets a valid pointer
	if len(buf) != size || unsafe.SliceData(buf) != (*byte)(unsafe.Pointer(p)) {
		return fmt.Errorf("bulk: loaded %d bytes, sized %d", len(buf), size) // a bug, not bad input
	}
	return nil
}

// insert stores the loaded events [start, end), start with seq seq, and
// returns the index after the last one stored: less than end if the chunk
// starting there has an id in ids or in deleted_ids; that chunk is left
// untouched, for the caller to take one by one.
func (b *bulk) insert(start, end int, seq int64) (int, error) {
	if end > len(b.meta)/bulkMeta || start >= end {
		return 0, fmt.Errorf("bulk insert: range [%d, %d) of %d loaded", start, end, len(b.meta)/bulkMeta)
	}
	var rc C.int
	n := C.bulk_insert(b.b, C.int(start), C.int(end), C.int64_t(seq),
		(*C.int64_t)(unsafe.Pointer(&b.meta[0])), (*C.int64_t)(unsafe.Pointer(&b.tags[0])), &rc)
	switch {
	case n == -2:
		return 0, fmt.Errorf("bulk insert: fewer event rows stored than given")
	case n < 0:
		return 0, b.err(rc, "insert")
	}
	return int(n), nil
}

// reset forgets the loaded run, and frees its C buffer if a run of large
// events grew it past what a usual run needs.
func (b *bulk) reset() {
	C.bulk_shrink(b.b, 4<<20)
	b.meta, b.tags = b.meta[:0], b.tags[:0]
}

// close finalizes the statements; it must run before the connection closes.
func (b *bulk) close() {
	if b.b != nil {
		C.bulk_free(b.b)
		b.b = nil
	}
}
