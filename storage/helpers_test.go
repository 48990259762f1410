package storage

import (
	"context"
	"database/sql"
	"encoding/hex"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// testClock is an injectable clock.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

var baseTime = time.Unix(1_700_000_000, 0)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// openTest opens a store in a fresh temp dir; it is closed at cleanup.
func openTest(t testing.TB, mod ...func(*Options)) (*Store, *testClock, string) {
	t.Helper()
	clk := &testClock{t: baseTime}
	path := filepath.Join(t.TempDir(), "events.db")
	opts := Options{Path: path, Now: clk.Now, Logger: quietLogger()}
	for _, m := range mod {
		m(&opts)
	}
	s, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, clk, path
}

type key struct{ sk, pk string }

func newKey(t testing.TB) key {
	t.Helper()
	sk := nostr.GeneratePrivateKey()
	pk, err := nostr.GetPublicKey(sk)
	if err != nil {
		t.Fatal(err)
	}
	return key{sk, pk}
}

// ev builds and signs an event; created_at is seconds after baseTime.
func ev(t testing.TB, k key, kind int, at int64, tags nostr.Tags, content string) *nostr.Event {
	t.Helper()
	if tags == nil {
		tags = nostr.Tags{}
	}
	e := &nostr.Event{
		PubKey:    k.pk,
		CreatedAt: nostr.Timestamp(baseTime.Unix() + at),
		Kind:      kind,
		Tags:      tags,
		Content:   content,
	}
	if err := e.Sign(k.sk); err != nil {
		t.Fatal(err)
	}
	return e
}

func ts(at int64) *nostr.Timestamp {
	x := nostr.Timestamp(baseTime.Unix() + at)
	return &x
}

func mustSave(t testing.TB, s *Store, evts ...*nostr.Event) {
	t.Helper()
	for _, e := range evts {
		if err := s.Save(context.Background(), e); err != nil {
			t.Fatalf("Save(kind %d %s): %v", e.Kind, e.ID[:8], err)
		}
	}
}

func query(t testing.TB, s *Store, f nostr.Filter, v Visibility) []*nostr.Event {
	t.Helper()
	got, err := s.Query(context.Background(), f, v)
	if err != nil {
		t.Fatalf("Query(%v): %v", f, err)
	}
	return got
}

func ids(evts []*nostr.Event) []string {
	out := make([]string, len(evts))
	for i, e := range evts {
		out[i] = e.ID
	}
	return out
}

// sameIDs reports whether got lists exactly want's ids in order.
func expectIDs(t testing.TB, got []*nostr.Event, want ...*nostr.Event) {
	t.Helper()
	g, w := ids(got), ids(want)
	if len(g) != len(w) {
		t.Fatalf("got %d events %v, want %d %v", len(g), short(g), len(w), short(w))
	}
	for i := range g {
		if g[i] != w[i] {
			t.Fatalf("event %d: got %v, want %v", i, short(g), short(w))
		}
	}
}

func short(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id[:8]
	}
	return out
}

func has(t testing.TB, s *Store, id string) bool {
	t.Helper()
	return len(query(t, s, nostr.Filter{IDs: []string{id}}, Visibility{})) == 1
}

// atSchema creates a database at path with the schema of version v (an
// older build's), lets fill write to it, and closes it.
func atSchema(t *testing.T, path string, v int, fill func(conn *sql.Conn)) {
	t.Helper()
	registerDrivers()
	db, err := sql.Open(driverRW, dsn(path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i := 0; i < v; i++ {
		if err := migrateStep(context.Background(), conn, i); err != nil {
			t.Fatal(err)
		}
	}
	fill(conn)
}

// insertRow writes e's row as every schema so far has it, with no tag rows
// and no id index entry.
func insertRow(t *testing.T, conn *sql.Conn, seq int64, e *nostr.Event) {
	t.Helper()
	id, _ := hex.DecodeString(e.ID)
	pk, _ := hex.DecodeString(e.PubKey)
	if _, err := conn.ExecContext(context.Background(), `INSERT INTO events(seq, id, pubkey, kind, created_at, raw) VALUES (?, ?, ?, ?, ?, ?)`,
		seq, id, pk, e.Kind, int64(e.CreatedAt), EncodeEvent(e)); err != nil {
		t.Fatal(err)
	}
}

// setMergeAt makes stores opened after it merge ids every n events, and
// restores the default once the test's stores are closed (cleanups run last
// registered first, so call it before opening them).
func setMergeAt(t *testing.T, n int) {
	old := mergeAt
	mergeAt = n
	t.Cleanup(func() { mergeAt = old })
}
