package storage

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nbd-wtf/go-nostr"
)

// Readers look an id up in memory, then in ids, while the writer merges the
// one into the other every few events: an event acknowledged as stored is
// found by id at every moment, on whichever side of a merge the reader is.
func TestIDLookupDuringMerges(t *testing.T) {
	setMergeAt(t, 3)
	s, _, _ := openTest(t)
	k := newKey(t)
	const n = 300
	evts := make([]*nostr.Event, n)
	for i := range evts {
		evts[i] = ev(t, k, 1, int64(i), nil, fmt.Sprint(i))
	}
	var acked atomic.Int64 // evts[:acked] are stored
	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for r := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for q := 0; ; q++ {
				select {
				case <-done:
					return
				default:
				}
				m := int(acked.Load())
				if m == 0 {
					continue
				}
				// The newest (merged soon, if not yet) and one older.
				want := []*nostr.Event{evts[m-1], evts[(q*7+r)%m]}
				got, err := s.Query(context.Background(), nostr.Filter{IDs: []string{want[0].ID, want[1].ID}}, Visibility{})
				if err != nil {
					errs <- err
					return
				}
				if len(got) != 2 && !(want[0] == want[1] && len(got) == 1) {
					errs <- fmt.Errorf("query for stored events %q and %q found %d", want[0].Content, want[1].Content, len(got))
					return
				}
			}
		}()
	}
	for i, e := range evts {
		if err := s.Save(context.Background(), e); err != nil {
			t.Fatal(err)
		}
		acked.Store(int64(i + 1))
	}
	close(done)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	var merged int
	if err := s.rdb.QueryRow("SELECT count(*) FROM ids").Scan(&merged); err != nil || merged < n/2 {
		t.Fatalf("%d ids merged (%v): the merges did not run", merged, err)
	}
}

// An entry in memory that names a seq whose row holds another event (which
// the writer never lets happen) still cannot make a query by id return that
// other event, nor make the writer take it for a duplicate.
func TestStaleRecentIDNamesNoOtherEvent(t *testing.T) {
	s, _, _ := openTest(t)
	k := newKey(t)
	stored := ev(t, k, 1, 0, nil, "stored")
	mustSave(t, s, stored)
	var seq int64
	if err := s.rdb.QueryRow("SELECT seq FROM events").Scan(&seq); err != nil {
		t.Fatal(err)
	}
	ghost := ev(t, k, 1, 1, nil, "never stored")
	id, _ := hex.DecodeString(ghost.ID)
	s.recent.add(map[[32]byte]int64{[32]byte(id): seq})
	if got := query(t, s, nostr.Filter{IDs: []string{ghost.ID}}, Visibility{}); len(got) != 0 {
		t.Fatalf("a query for %q returned %v", ghost.Content, ids(got))
	}
	if got := query(t, s, nostr.Filter{IDs: []string{ghost.ID, stored.ID}}, Visibility{}); len(got) != 1 || got[0].ID != stored.ID {
		t.Fatalf("a query for both returned %v, want only %q", ids(got), stored.Content)
	}
	if err := s.Save(context.Background(), ghost); err != nil {
		t.Fatalf("saving %q: %v", ghost.Content, err)
	}
	expectIDs(t, query(t, s, nostr.Filter{IDs: []string{ghost.ID}}, Visibility{}), ghost)
}

// Swept, the newest event leaves its seq behind in memory: the next event
// gets a new seq, so the old entry names no row.
func TestSeqNotReusedAfterSweep(t *testing.T) {
	s, clk, _ := openTest(t)
	k := newKey(t)
	keep := ev(t, k, 1, 0, nil, "kept")
	expiring := ev(t, k, 1, 1, nostr.Tags{{"expiration", fmt.Sprint(baseTime.Unix() + 10)}}, "expiring")
	mustSave(t, s, keep, expiring)
	seqOf := func(e *nostr.Event) int64 {
		t.Helper()
		id, _ := hex.DecodeString(e.ID)
		var seq int64
		if err := s.rdb.QueryRow("SELECT seq FROM events WHERE id = ?", id).Scan(&seq); err != nil {
			t.Fatal(err)
		}
		return seq
	}
	old := seqOf(expiring)
	clk.Set(baseTime.Add(20e9))
	if n, err := s.SweepExpired(context.Background()); err != nil || n != 1 {
		t.Fatalf("SweepExpired = %d, %v", n, err)
	}
	next := ev(t, k, 1, 30, nil, "after the sweep")
	mustSave(t, s, next)
	if seq := seqOf(next); seq <= old {
		t.Fatalf("the event after the sweep got seq %d, not above the swept event's %d", seq, old)
	}
	if got := query(t, s, nostr.Filter{IDs: []string{expiring.ID}}, Visibility{}); len(got) != 0 {
		t.Fatalf("the swept event's id finds %v", ids(got))
	}
	expectIDs(t, query(t, s, nostr.Filter{IDs: []string{next.ID, keep.ID}}, Visibility{}), next, keep)
}

// A batch whose transaction fails is retried event by event: the ids its
// events were given in the failed transaction do not make them duplicates.
func TestFailedBatchLeavesNoIDs(t *testing.T) {
	s, _, _ := openTest(t)
	k := newKey(t)
	var evts []*nostr.Event
	for i := range 3 * bulkMaxRows {
		evts = append(evts, ev(t, k, 1, int64(i), nostr.Tags{{"t", "retry"}}, fmt.Sprint(i)))
	}
	release := holdWriter(t, s)
	var wg sync.WaitGroup
	got := make([]error, len(evts))
	for i, e := range evts[:2*bulkMaxRows] {
		wg.Add(1)
		s.SaveAsync(e, func(err error) { got[i] = err; wg.Done() })
	}
	boom := errors.New("boom")
	jobErr := make(chan error, 1)
	if err := s.enqueue(context.Background(), &request{done: func(err error) { jobErr <- err }, job: func(*writer) error { return boom }}); err != nil {
		t.Fatal(err)
	}
	for i, e := range evts[2*bulkMaxRows:] {
		wg.Add(1)
		s.SaveAsync(e, func(err error) { got[2*bulkMaxRows+i] = err; wg.Done() })
	}
	release()
	wg.Wait()
	if err := <-jobErr; !errors.Is(err, boom) {
		t.Fatalf("the failing job: %v", err)
	}
	for i, err := range got {
		if err != nil {
			t.Fatalf("event %d, retried alone: %v", i, err)
		}
	}
	all := query(t, s, nostr.Filter{Tags: nostr.TagMap{"t": {"retry"}}, Limit: 1000}, Visibility{})
	if len(all) != len(evts) {
		t.Fatalf("%d events stored, want %d", len(all), len(evts))
	}
	for _, e := range []*nostr.Event{evts[0], evts[len(evts)-1]} {
		expectIDs(t, query(t, s, nostr.Filter{IDs: []string{e.ID}}, Visibility{}), e)
		if err := s.Save(context.Background(), e); !errors.Is(err, ErrDuplicate) {
			t.Fatalf("saved again: %v, want ErrDuplicate", err)
		}
	}
}

// A run that goes in through bulk with ids already stored, some merged into
// ids and some only in memory: each is refused as a duplicate, and the new
// events around them are stored once each.
func TestBulkRunAgainstMergedIDs(t *testing.T) {
	setMergeAt(t, 5)
	s, _, _ := openTest(t)
	k := newKey(t)
	var old []*nostr.Event
	for i := range 12 {
		e := ev(t, k, 1, int64(i), nil, fmt.Sprint("old ", i))
		old = append(old, e)
		mustSave(t, s, e)
	}
	var fresh []*nostr.Event
	for i := range 2 * bulkMaxRows {
		fresh = append(fresh, ev(t, k, 1, int64(100+i), nostr.Tags{{"t", "fresh"}}, fmt.Sprint("fresh ", i)))
	}
	// old[0] is merged into ids by now, old[11] is not; they go in
	// different chunks, since a chunk with an id in ids goes one by one.
	const at0, at11 = 10, bulkMaxRows + 30
	sent := slices.Concat(fresh[:at0], []*nostr.Event{old[0]}, fresh[at0:at11-1], []*nostr.Event{old[11]}, fresh[at11-1:])
	got := saveAsOneBatch(t, s, sent)
	for i, e := range sent {
		want := error(nil)
		if i == at0 || i == at11 {
			want = ErrDuplicate
		}
		if !errors.Is(got[i], want) && got[i] != want {
			t.Fatalf("%q: %v, want %v", e.Content, got[i], want)
		}
	}
	var n, distinct int
	if err := s.rdb.QueryRow("SELECT count(*), count(DISTINCT id) FROM events").Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if n != 12+len(fresh) || distinct != n {
		t.Fatalf("%d events stored, %d distinct ids; want %d", n, distinct, 12+len(fresh))
	}
	if got := query(t, s, nostr.Filter{Tags: nostr.TagMap{"t": {"fresh"}}, Limit: 1000}, Visibility{}); len(got) != len(fresh) {
		t.Fatalf("#t fresh finds %d, want %d", len(got), len(fresh))
	}
}

// A store at schema 3, with ids in both recent_ids and ids, migrates to
// schema 4 with every id in ids and the merge mark at the newest event.
func TestMigrateV3RecentIDs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v3.db")
	ctx := context.Background()
	k := newKey(t)
	var evts []*nostr.Event
	atSchema(t, path, 3, func(conn *sql.Conn) {
		for i := range 6 {
			e := ev(t, k, 1, int64(i), nil, fmt.Sprint(i))
			evts = append(evts, e)
			insertRow(t, conn, int64(i+1), e)
			table := "ids"
			if i >= 3 {
				table = "recent_ids"
			}
			id, _ := hex.DecodeString(e.ID)
			if _, err := conn.ExecContext(ctx, "INSERT INTO "+table+"(id, seq) VALUES (?, ?)", id, i+1); err != nil {
				t.Fatal(err)
			}
		}
	})

	s, err := Open(ctx, Options{Path: path, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var v, inIDs, mark int
	if err := s.rdb.QueryRow("SELECT (SELECT count(*) FROM ids JOIN events USING (id, seq)), (SELECT seq FROM ids_merged), (SELECT user_version FROM pragma_user_version)").Scan(&inIDs, &mark, &v); err != nil {
		t.Fatal(err)
	}
	if v != SchemaVersion || inIDs != 6 || mark != 6 || s.recent.len() != 0 {
		t.Fatalf("schema %d, %d ids in ids, merged up to %d, %d in memory; want %d, 6, 6, 0", v, inIDs, mark, s.recent.len(), SchemaVersion)
	}
	for _, e := range []*nostr.Event{evts[1], evts[4]} {
		if err := s.Save(ctx, e); !errors.Is(err, ErrDuplicate) {
			t.Fatalf("duplicate of a migrated event: %v", err)
		}
	}
	next := ev(t, k, 1, 10, nil, "after the migration")
	mustSave(t, s, next)
	expectIDs(t, query(t, s, nostr.Filter{IDs: []string{evts[4].ID, next.ID, evts[1].ID}}, Visibility{}), next, evts[4], evts[1])
}

// After a merge, the newest event swept and the store reopened, the next
// event's seq must still be above ids_merged.seq: an event at or below it is
// taken for merged, so after another reopen it would not be found by id and
// a second copy would be accepted.
func TestSeqAboveMergeAfterReopen(t *testing.T) {
	setMergeAt(t, 3)
	s, clk, path := openTest(t)
	k := newKey(t)
	exp := nostr.Tags{{"expiration", fmt.Sprint(baseTime.Unix() + 10)}}
	mustSave(t, s, ev(t, k, 1, 0, nil, "a"), ev(t, k, 1, 1, nil, "b"), ev(t, k, 1, 2, exp, "expiring"))
	s.Close() // after the merge that followed the third
	reopen := func() *Store {
		t.Helper()
		s, err := Open(context.Background(), Options{Path: path, Now: clk.Now, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	s = reopen()
	clk.Set(baseTime.Add(20e9))
	if n, err := s.SweepExpired(context.Background()); err != nil || n != 1 {
		t.Fatalf("SweepExpired = %d, %v", n, err)
	}
	s.Close()
	s = reopen()
	e := ev(t, k, 1, 30, nil, "after the sweep")
	mustSave(t, s, e)
	s.Close()
	s = reopen()
	expectIDs(t, query(t, s, nostr.Filter{IDs: []string{e.ID}}, Visibility{}), e)
	if err := s.Save(context.Background(), e); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("saved again: %v, want ErrDuplicate", err)
	}
}

// A second store on the same file, which would not see the first one's
// recent ids, is refused until the first is closed.
func TestOpenLocked(t *testing.T) {
	s, _, path := openTest(t)
	if s2, err := Open(context.Background(), Options{Path: path, Logger: quietLogger()}); !errors.Is(err, ErrLocked) {
		if err == nil {
			s2.Close()
		}
		t.Fatalf("second Open of %s: %v, want ErrLocked", path, err)
	}
	mustSave(t, s, ev(t, newKey(t), 1, 0, nil, "the first store still works"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(context.Background(), Options{Path: path, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s2.Close()
	if fi, err := os.Stat(path + ".lock"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("lock file: %v, %v", fi, err)
	}
}

// A merge rewrites most of ids, so merges come further apart as ids grows
// (a quarter of it, in memory, makes the next merge due): with merges due at
// every 8 events, 400 events take a dozen merges, not 50, and every event
// is still found, by the writer and by a query.
func TestMergesComeFurtherApartAsIDsGrows(t *testing.T) {
	setMergeAt(t, 8)
	s, _, _ := openTest(t)
	k := newKey(t)
	const n = 400
	evts := make([]*nostr.Event, n)
	for i := range evts {
		evts[i] = ev(t, k, 1, int64(i), nil, fmt.Sprint(i))
		mustSave(t, s, evts[i])
	}
	merges := int(s.commits.Load()) - n // one transaction per Save, one per merge
	var merged int64
	if err := s.rdb.QueryRow("SELECT seq FROM ids_merged").Scan(&merged); err != nil {
		t.Fatal(err)
	}
	if merges < 5 || merges > 16 || merged < n/2 {
		t.Fatalf("%d merges, ids merged up to seq %d, for %d events: want 5 to 16 merges, most ids merged", merges, merged, n)
	}
	if got := s.recent.len(); got >= mergeThreshold(merged) || got != n-int(merged) {
		t.Fatalf("%d ids in memory after a merge up to seq %d of %d", got, merged, n)
	}
	for _, e := range []*nostr.Event{evts[0], evts[n/2], evts[n-1]} {
		if err := s.Save(context.Background(), e); !errors.Is(err, ErrDuplicate) {
			t.Fatalf("duplicate of %q: %v", e.Content, err)
		}
	}
	expectIDs(t, query(t, s, nostr.Filter{IDs: []string{evts[0].ID, evts[n/2].ID, evts[n-1].ID}}, Visibility{}), evts[n-1], evts[n/2], evts[0])
}

func TestMergeThreshold(t *testing.T) {
	for _, c := range []struct {
		merged int64
		want   int
	}{{0, mergeAt}, {4 * int64(mergeAt), mergeAt}, {20 * int64(mergeAt), 5 * mergeAt}, {1 << 40, mergeMax}} {
		if got := mergeThreshold(c.merged); got != c.want {
			t.Errorf("mergeThreshold(%d) = %d, want %d", c.merged, got, c.want)
		}
	}
}
