// Package storage is the node relay's SQLite event store.
//
// One writer goroutine owns the only write connection and group-commits queued
// events (many events per transaction, one fsync per commit). Reads go through
// a separate pool of query-only connections, which WAL lets run concurrently
// with the writer.
package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mattn/go-sqlite3"
)

// Errors returned by Save / SaveAsync. Their text is what the relay puts in
// its OK message, prefix included.
var (
	ErrDuplicate = errors.New("duplicate: already have this event")
	ErrDeleted   = errors.New("blocked: this event was deleted (NIP-09: by its author, or a gift wrap by its recipient)")
	ErrReplaced  = errors.New("duplicate: a newer version of this replaceable event is stored")
	ErrClosed    = errors.New("error: store is closed")
	// ErrExpired is returned for an event whose NIP-40 expiration is already <= now.
	ErrExpired = errors.New("invalid: event has expired")
	// ErrInvalid wraps malformed events (bad id or pubkey hex); errors.Is(err, ErrInvalid).
	ErrInvalid = errors.New("invalid: malformed event")
)

// Options configures Open.
type Options struct {
	Path        string           // SQLite file path (created 0600 if missing; parent dir must exist)
	MaxBatch    int              // group-commit: max events per transaction (default 1024)
	Synchronous string           // "FULL" (default: durable on commit) or "NORMAL"
	Logger      *slog.Logger     // default slog.Default()
	Now         func() time.Time // default time.Now (tests inject)
	// DefaultLimit is applied to a Query whose filter has Limit == 0 and !LimitZero (default 500).
	DefaultLimit int
	// ReadConns is the size of the read pool (default max(4, 2*GOMAXPROCS)).
	ReadConns int
	// QueueSize is the capacity of the writer's queue (default 4*MaxBatch).
	QueueSize int
	// PageSize is the SQLite page size of a new database (default 8192; a
	// power of two from 512 to 65536). An existing database keeps its own.
	// 8 KiB pages ingested about 5 % faster than 4 KiB ones here (fewer
	// B-tree pages to split and to write per commit); see docs/performance.md.
	PageSize int
}

// Stats describes the store.
type Stats struct {
	Events    int64 // stored events
	Tags      int64 // indexed single-letter tag rows
	Deletions int64 // remembered deleted event ids (per deleter)
	SizeBytes int64 // database pages in use * page size (excludes the WAL)
	Commits   int64 // write transactions committed since Open
	Requests  int64 // requests handled by the writer since Open (events and jobs)
}

// Store is the event store. It is safe for concurrent use.
type Store struct {
	opts   Options
	log    *slog.Logger
	now    func() time.Time
	wdb    *sql.DB // exactly one connection, owned by the writer goroutine
	rdb    *sql.DB // read-only pool
	w      *writer
	recent *recentIDs // the id index since the last merge (recent.go)
	lock   *os.File   // holds the flock on Path+".lock" (lock.go)
	queue  chan *request
	mu     sync.RWMutex // guards closed against concurrent enqueue
	closed bool

	writerDone chan struct{}
	// completions carries committed batches from the writer to the notifier
	// goroutine, which calls their done callbacks in order, so the writer
	// goes on to the next transaction at once.
	completions  chan completion
	notifierDone chan struct{}
	closeOnce    sync.Once
	closeErr     error

	commits  atomic.Int64
	requests atomic.Int64

	stmtMu sync.Mutex
	stmts  map[string]*sql.Stmt // read statement cache keyed by SQL text
}

const (
	driverRW = "anchorchat_sqlite3_rw"
	driverRO = "anchorchat_sqlite3_ro"
)

var registerOnce sync.Once

func registerDrivers() {
	registerOnce.Do(func() {
		sql.Register(driverRW, &sqlite3.SQLiteDriver{
			ConnectHook: func(c *sqlite3.SQLiteConn) error {
				return execPragmas(c,
					"PRAGMA busy_timeout=10000",
					"PRAGMA foreign_keys=OFF",
					"PRAGMA temp_store=MEMORY",
					"PRAGMA cache_size=-131072", // 128 MiB: random index pages stay hot
					// no mmap on the writer: measured 2-4x slower inserts with it

					// Checkpoint less often: a page dirtied by many group commits is
					// then copied into the database file once per checkpoint.
					"PRAGMA wal_autocheckpoint=8192",
				)
			},
		})
		sql.Register(driverRO, &sqlite3.SQLiteDriver{
			ConnectHook: func(c *sqlite3.SQLiteConn) error {
				return execPragmas(c,
					"PRAGMA busy_timeout=10000",
					"PRAGMA query_only=1",
					"PRAGMA temp_store=MEMORY",
					"PRAGMA cache_size=-16384",    // 16 MiB per connection
					"PRAGMA mmap_size=4294967296", // readers map up to 4 GiB of the file
				)
			},
		})
	})
}

func execPragmas(c *sqlite3.SQLiteConn, pragmas ...string) error {
	for _, p := range pragmas {
		if _, err := c.Exec(p, nil); err != nil {
			return fmt.Errorf("storage: %s: %w", p, err)
		}
	}
	return nil
}

func dsn(path string) string {
	u := url.URL{Scheme: "file", Opaque: url.PathEscape(path)}
	// Opaque keeps the path as is; make sure '?' and '#' inside it are escaped.
	return u.String()
}

// Open opens (creating if needed) the store at opts.Path, switches it to WAL,
// applies pending schema migrations and starts the writer goroutine.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Path == "" {
		return nil, errors.New("storage: Options.Path is empty")
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1024
	}
	if opts.DefaultLimit <= 0 {
		opts.DefaultLimit = 500
	}
	if opts.ReadConns <= 0 {
		opts.ReadConns = max(4, 2*runtime.GOMAXPROCS(0))
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 4 * opts.MaxBatch
	}
	if opts.PageSize == 0 {
		opts.PageSize = 8192
	}
	if opts.PageSize < 512 || opts.PageSize > 65536 || opts.PageSize&(opts.PageSize-1) != 0 {
		return nil, fmt.Errorf("storage: PageSize must be a power of two from 512 to 65536, not %d", opts.PageSize)
	}
	switch strings.ToUpper(opts.Synchronous) {
	case "":
		opts.Synchronous = "FULL"
	case "FULL", "NORMAL":
		opts.Synchronous = strings.ToUpper(opts.Synchronous)
	default:
		return nil, fmt.Errorf("storage: Synchronous must be FULL or NORMAL, not %q", opts.Synchronous)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}

	// Create the file ourselves so it gets mode 0600 (SQLite gives its -wal and
	// -shm files the same mode as the database file).
	f, err := os.OpenFile(opts.Path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("storage: create %s: %w", opts.Path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("storage: create %s: %w", opts.Path, err)
	}

	lock, err := lockFile(opts.Path)
	if err != nil {
		return nil, err
	}
	s, err := open(ctx, opts)
	if err != nil {
		lock.Close()
		return nil, err
	}
	s.lock = lock
	return s, nil
}

// open is Open's work once the store's lock is held.
func open(ctx context.Context, opts Options) (*Store, error) {
	var err error
	registerDrivers()
	s := &Store{
		opts:         opts,
		log:          opts.Logger.With("component", "storage"),
		now:          opts.Now,
		writerDone:   make(chan struct{}),
		completions:  make(chan completion, 4),
		notifierDone: make(chan struct{}),
		stmts:        make(map[string]*sql.Stmt),
		recent:       newRecentIDs(),
	}

	if err := registerHandleFunc(); err != nil {
		return nil, err
	}
	s.wdb, err = sql.Open(driverRW, dsn(opts.Path))
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", opts.Path, err)
	}
	s.wdb.SetMaxOpenConns(1)
	s.wdb.SetMaxIdleConns(1)
	s.wdb.SetConnMaxLifetime(0)
	s.wdb.SetConnMaxIdleTime(0)

	conn, err := s.wdb.Conn(ctx)
	if err != nil {
		s.wdb.Close()
		return nil, fmt.Errorf("storage: open %s: %w", opts.Path, err)
	}
	fail := func(err error) (*Store, error) {
		conn.Close()
		s.wdb.Close()
		return nil, err
	}
	// Only takes effect while the file is still empty (before WAL mode and
	// the first table); an existing database keeps its page size.
	if _, err := conn.ExecContext(ctx, "PRAGMA page_size="+strconv.Itoa(opts.PageSize)); err != nil {
		return fail(fmt.Errorf("storage: set page size: %w", err))
	}
	var mode string
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode=WAL").Scan(&mode); err != nil {
		return fail(fmt.Errorf("storage: enable WAL: %w", err))
	}
	if !strings.EqualFold(mode, "wal") {
		return fail(fmt.Errorf("storage: journal_mode is %q, want wal", mode))
	}
	if _, err := conn.ExecContext(ctx, "PRAGMA synchronous="+opts.Synchronous); err != nil {
		return fail(fmt.Errorf("storage: set synchronous: %w", err))
	}
	if err := migrate(ctx, conn, s.log); err != nil {
		return fail(err)
	}

	s.rdb, err = sql.Open(driverRO, dsn(opts.Path))
	if err != nil {
		return fail(fmt.Errorf("storage: open read pool: %w", err))
	}
	s.rdb.SetMaxOpenConns(opts.ReadConns)
	s.rdb.SetMaxIdleConns(opts.ReadConns)
	s.rdb.SetConnMaxIdleTime(0)
	if err := s.rdb.PingContext(ctx); err != nil {
		s.rdb.Close()
		return fail(fmt.Errorf("storage: open read pool: %w", err))
	}

	s.w, err = newWriter(ctx, s, conn)
	if err != nil {
		s.rdb.Close()
		return fail(err)
	}
	s.queue = make(chan *request, opts.QueueSize)
	go s.runWriter()
	go s.runNotifier()
	s.log.Debug("store opened", "path", opts.Path, "synchronous", opts.Synchronous, "max_batch", opts.MaxBatch)
	return s, nil
}

// Close stops accepting saves (they then return ErrClosed), waits for queued
// writes to commit, and closes the database. It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.queue)
		s.mu.Unlock()
		<-s.writerDone
		<-s.notifierDone

		var errs []error
		s.stmtMu.Lock()
		for _, st := range s.stmts {
			errs = append(errs, st.Close())
		}
		s.stmts = nil
		s.stmtMu.Unlock()
		errs = append(errs, s.w.close())
		errs = append(errs, s.rdb.Close(), s.wdb.Close(), s.lock.Close())
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("storage: close: %w", err)
		}
		s.log.Debug("store closed")
	})
	return s.closeErr
}

// Stats returns counters about the store.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	var pages, pageSize, free int64
	err := s.rdb.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM events),
		(SELECT count(*) FROM tags),
		(SELECT count(*) FROM deleted_ids),
		(SELECT page_count FROM pragma_page_count()),
		(SELECT page_size FROM pragma_page_size()),
		(SELECT freelist_count FROM pragma_freelist_count())`).
		Scan(&st.Events, &st.Tags, &st.Deletions, &pages, &pageSize, &free)
	if err != nil {
		return Stats{}, fmt.Errorf("storage: stats: %w", err)
	}
	st.SizeBytes = (pages - free) * pageSize
	st.Commits = s.commits.Load()
	st.Requests = s.requests.Load()
	return st, nil
}

// readStmt returns a prepared statement for query on the read pool, and
// whether it is cached (if not, the caller must Close it). Statements with
// more than maxCachedArgs arguments are not cached: their shapes rarely
// repeat.
func (s *Store) readStmt(ctx context.Context, query string, nargs int) (*sql.Stmt, bool, error) {
	if nargs > maxCachedArgs {
		// Not cached, so prepared without holding up the cache's users.
		s.stmtMu.Lock()
		closed := s.stmts == nil
		s.stmtMu.Unlock()
		if closed {
			return nil, false, ErrClosed
		}
		st, err := s.rdb.PrepareContext(ctx, query)
		return st, false, err
	}
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	if s.stmts == nil {
		return nil, false, ErrClosed
	}
	if st, ok := s.stmts[query]; ok {
		return st, true, nil
	}
	st, err := s.rdb.PrepareContext(ctx, query)
	if err != nil {
		return nil, false, err
	}
	// Filter shapes repeat heavily in practice; keep the cache bounded and never
	// evict (a statement may be in use by another goroutine).
	if len(s.stmts) >= maxCachedStmts {
		return st, false, nil
	}
	s.stmts[query] = st
	return st, true, nil
}

const (
	maxCachedStmts = 512
	maxCachedArgs  = 16
)
