package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

func TestSaveQueryRoundTripAndDuplicate(t *testing.T) {
	s, _, _ := openTest(t)
	k := newKey(t)
	e := ev(t, k, 1, 10, nostr.Tags{{"t", "hello"}, {"p", k.pk}, {"alt", "x"}, {"single"}}, "hi \"there\" \u2603")
	mustSave(t, s, e)
	if err := s.Save(context.Background(), e); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("second Save = %v, want ErrDuplicate", err)
	}
	got := query(t, s, nostr.Filter{}, Visibility{})
	expectIDs(t, got, e)
	g := got[0]
	if g.Content != e.Content || g.Sig != e.Sig || g.PubKey != e.PubKey || g.CreatedAt != e.CreatedAt || len(g.Tags) != 4 {
		t.Fatalf("round trip mismatch: %+v vs %+v", g, e)
	}
	if ok, err := g.CheckSignature(); !ok || err != nil {
		t.Fatalf("stored event no longer verifies: %v", err)
	}
	// QueryRaw gives the exact canonical bytes.
	want, _ := e.MarshalJSON()
	var raws []string
	if err := s.QueryRaw(context.Background(), nostr.Filter{}, Visibility{}, func(raw []byte) error {
		raws = append(raws, string(raw))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(raws) != 1 || raws[0] != string(want) {
		t.Fatalf("raw = %q, want %q", raws, want)
	}
	st, err := s.Stats(context.Background())
	if err != nil || st.Events != 1 || st.Tags != 2 {
		t.Fatalf("Stats = %+v, %v; want 1 event, 2 single-letter tags", st, err)
	}
}

func TestSaveRejectsMalformed(t *testing.T) {
	s, _, _ := openTest(t)
	k := newKey(t)
	e := ev(t, k, 1, 0, nil, "x")
	bad := *e
	bad.ID = strings.ToUpper(bad.ID)
	if err := s.Save(context.Background(), &bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("uppercase id: %v, want ErrInvalid", err)
	}
	bad = *e
	bad.PubKey = "abc"
	if err := s.Save(context.Background(), &bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("short pubkey: %v, want ErrInvalid", err)
	}
	if err := s.Save(context.Background(), nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("nil: %v", err)
	}
}

func TestFilters(t *testing.T) {
	s, _, _ := openTest(t, func(o *Options) { o.DefaultLimit = 4 })
	a, b := newKey(t), newKey(t)
	e1 := ev(t, a, 1, 1, nostr.Tags{{"t", "x"}, {"p", b.pk}}, "1")
	e2 := ev(t, a, 1, 2, nostr.Tags{{"t", "y"}}, "2")
	e3 := ev(t, b, 7, 3, nostr.Tags{{"t", "x"}, {"e", e1.ID}}, "3")
	e4 := ev(t, b, 1, 4, nostr.Tags{{"t", "y"}, {"p", b.pk}, {"t", "x"}}, "4")
	e5 := ev(t, a, 30023, 5, nostr.Tags{{"d", "art"}, {"t", "x"}, {"p", a.pk}}, "5")
	// two events at the same second: order is id ASC
	e6 := ev(t, b, 1, 6, nostr.Tags{{"t", "tie"}}, "6a")
	e7 := ev(t, b, 1, 6, nostr.Tags{{"t", "tie"}}, "6b")
	mustSave(t, s, e1, e2, e3, e4, e5, e6, e7)
	tieFirst, tieSecond := e6, e7
	if e7.ID < e6.ID {
		tieFirst, tieSecond = e7, e6
	}

	cases := []struct {
		name string
		f    nostr.Filter
		want []*nostr.Event
	}{
		{"ids", nostr.Filter{IDs: []string{e2.ID, e3.ID, "zz", strings.ToUpper(e1.ID)}}, []*nostr.Event{e3, e2}},
		{"ids only invalid", nostr.Filter{IDs: []string{"nothex"}}, nil},
		{"empty ids", nostr.Filter{IDs: []string{}}, nil},
		{"authors", nostr.Filter{Authors: []string{a.pk}}, []*nostr.Event{e5, e2, e1}},
		{"authors+kinds", nostr.Filter{Authors: []string{a.pk, b.pk}, Kinds: []int{7, 30023}}, []*nostr.Event{e5, e3}},
		{"kinds", nostr.Filter{Kinds: []int{7}}, []*nostr.Event{e3}},
		{"empty kinds", nostr.Filter{Kinds: []int{}}, nil},
		{"tag single", nostr.Filter{Tags: nostr.TagMap{"e": {e1.ID}}}, []*nostr.Event{e3}},
		{"tag OR", nostr.Filter{Tags: nostr.TagMap{"t": {"y", "x"}}, Limit: 10}, []*nostr.Event{e5, e4, e3, e2, e1}},
		{"tag OR dup values", nostr.Filter{Tags: nostr.TagMap{"t": {"x", "y", "x"}}, Limit: 10}, []*nostr.Event{e5, e4, e3, e2, e1}},
		{"tags AND", nostr.Filter{Tags: nostr.TagMap{"t": {"x"}, "p": {b.pk}}}, []*nostr.Event{e4, e1}},
		{"tags AND multi", nostr.Filter{Tags: nostr.TagMap{"t": {"x", "y"}, "p": {b.pk, a.pk}}}, []*nostr.Event{e5, e4, e1}},
		{"tags AND none", nostr.Filter{Tags: nostr.TagMap{"t": {"y"}, "e": {e1.ID}}}, nil},
		{"d tag", nostr.Filter{Tags: nostr.TagMap{"d": {"art"}}}, []*nostr.Event{e5}},
		{"tag nil values ignored", nostr.Filter{Kinds: []int{7}, Tags: nostr.TagMap{"t": nil}}, []*nostr.Event{e3}},
		{"tag empty values", nostr.Filter{Tags: nostr.TagMap{"t": {}}}, nil},
		{"multi-letter tag", nostr.Filter{Tags: nostr.TagMap{"alt": {"x"}}}, nil},
		{"since/until inclusive", nostr.Filter{Since: ts(2), Until: ts(4)}, []*nostr.Event{e4, e3, e2}},
		{"since only", nostr.Filter{Since: ts(5)}, []*nostr.Event{tieFirst, tieSecond, e5}},
		{"until only", nostr.Filter{Until: ts(1)}, []*nostr.Event{e1}},
		{"since>until", nostr.Filter{Since: ts(4), Until: ts(2)}, nil},
		{"tag+since/until", nostr.Filter{Tags: nostr.TagMap{"t": {"x"}}, Since: ts(3), Until: ts(4)}, []*nostr.Event{e4, e3}},
		{"limit", nostr.Filter{Limit: 2}, []*nostr.Event{tieFirst, tieSecond}},
		{"default limit", nostr.Filter{}, []*nostr.Event{tieFirst, tieSecond, e5, e4}},
		{"limit zero", nostr.Filter{LimitZero: true}, nil},
		{"tie order", nostr.Filter{Tags: nostr.TagMap{"t": {"tie"}}}, []*nostr.Event{tieFirst, tieSecond}},
		{"authors+tag", nostr.Filter{Authors: []string{b.pk}, Tags: nostr.TagMap{"t": {"x"}}}, []*nostr.Event{e4, e3}},
		{"ids+tag mismatch", nostr.Filter{IDs: []string{e2.ID}, Tags: nostr.TagMap{"t": {"x"}}}, nil},
		{"search ignored", nostr.Filter{Kinds: []int{7}, Search: "nothing"}, []*nostr.Event{e3}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := query(t, s, c.f, Visibility{})
			expectIDs(t, got, c.want...)
			for _, g := range got {
				if !c.f.Matches(g) {
					t.Fatalf("returned %s which does not match", g.ID[:8])
				}
			}
			if c.f.LimitZero || c.f.Limit > 0 || c.name == "default limit" {
				return
			}
			n, err := s.Count(context.Background(), c.f, Visibility{})
			if err != nil || n != int64(len(c.want)) {
				t.Fatalf("Count = %d, %v; want %d", n, err, len(c.want))
			}
		})
	}
	// Count ignores the limit.
	if n, _ := s.Count(context.Background(), nostr.Filter{Limit: 1}, Visibility{}); n != 7 {
		t.Fatalf("Count with limit = %d, want 7", n)
	}
}

func TestQueryRawStopsOnError(t *testing.T) {
	s, _, _ := openTest(t)
	k := newKey(t)
	mustSave(t, s, ev(t, k, 1, 1, nil, "a"), ev(t, k, 1, 2, nil, "b"), ev(t, k, 1, 3, nil, "c"))
	stop := errors.New("stop")
	calls := 0
	err := s.QueryRaw(context.Background(), nostr.Filter{}, Visibility{}, func([]byte) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("err=%v calls=%d", err, calls)
	}
}

func TestVisibility(t *testing.T) {
	s, _, _ := openTest(t)
	alice, bob, carol := newKey(t), newKey(t), newKey(t)
	wrapBob := ev(t, carol, 1059, 1, nostr.Tags{{"p", bob.pk}}, "for bob")
	wrapAlice := ev(t, carol, 1059, 2, nostr.Tags{{"p", alice.pk}}, "for alice")
	dmBob := ev(t, carol, 4, 3, nostr.Tags{{"p", bob.pk}}, "kind4 for bob")
	public := ev(t, carol, 1, 4, nostr.Tags{{"p", bob.pk}}, "public")
	mustSave(t, s, wrapBob, wrapAlice, dmBob, public)

	private := []int{4, 1059}
	none := Visibility{PrivateKinds: private}
	asBob := Visibility{PrivateKinds: private, Readers: []string{bob.pk}}
	asBoth := Visibility{PrivateKinds: private, Readers: []string{bob.pk, alice.pk}}

	cases := []struct {
		name string
		f    nostr.Filter
		v    Visibility
		want []*nostr.Event
	}{
		{"no readers, no kinds", nostr.Filter{}, none, []*nostr.Event{public}},
		{"no readers, private kind", nostr.Filter{Kinds: []int{1059}}, none, nil},
		{"no readers, mixed kinds", nostr.Filter{Kinds: []int{1059, 1}}, none, []*nostr.Event{public}},
		{"no readers, by id", nostr.Filter{IDs: []string{wrapBob.ID}}, none, nil},
		{"no readers, by p tag", nostr.Filter{Tags: nostr.TagMap{"p": {bob.pk}}}, none, []*nostr.Event{public}},
		{"bob, no kinds", nostr.Filter{}, asBob, []*nostr.Event{public, dmBob, wrapBob}},
		{"bob, private kind", nostr.Filter{Kinds: []int{1059}}, asBob, []*nostr.Event{wrapBob}},
		{"bob, mixed kinds", nostr.Filter{Kinds: []int{1059, 1}}, asBob, []*nostr.Event{public, wrapBob}},
		{"bob asks for alice's wrap", nostr.Filter{Tags: nostr.TagMap{"p": {alice.pk}}}, asBob, nil},
		{"bob asks by id", nostr.Filter{IDs: []string{wrapAlice.ID, wrapBob.ID}}, asBob, []*nostr.Event{wrapBob}},
		{"both readers", nostr.Filter{Kinds: []int{1059}}, asBoth, []*nostr.Event{wrapAlice, wrapBob}},
		{"no private kinds configured", nostr.Filter{Kinds: []int{1059}}, Visibility{}, []*nostr.Event{wrapAlice, wrapBob}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			expectIDs(t, query(t, s, c.f, c.v), c.want...)
			n, err := s.Count(context.Background(), c.f, c.v)
			if err != nil || n != int64(len(c.want)) {
				t.Fatalf("Count = %d, %v; want %d", n, err, len(c.want))
			}
		})
	}
}

func TestReplaceable(t *testing.T) {
	s, _, _ := openTest(t)
	k := newKey(t)
	v1 := ev(t, k, 0, 10, nil, `{"name":"v1"}`)
	v2 := ev(t, k, 0, 20, nil, `{"name":"v2"}`)
	old := ev(t, k, 0, 5, nil, `{"name":"old"}`)
	mustSave(t, s, v1, v2)
	expectIDs(t, query(t, s, nostr.Filter{Authors: []string{k.pk}, Kinds: []int{0}}, Visibility{}), v2)
	if err := s.Save(context.Background(), old); !errors.Is(err, ErrReplaced) {
		t.Fatalf("older: %v, want ErrReplaced", err)
	}
	if err := s.Save(context.Background(), v1); !errors.Is(err, ErrReplaced) {
		t.Fatalf("replaced again: %v, want ErrReplaced", err)
	}
	if err := s.Save(context.Background(), v2); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("same: %v, want ErrDuplicate", err)
	}
	// tie on created_at: lowest id wins, whatever the arrival order
	x := ev(t, k, 0, 30, nil, "x")
	y := ev(t, k, 0, 30, nil, "y")
	lo, hi := x, y
	if y.ID < x.ID {
		lo, hi = y, x
	}
	mustSave(t, s, hi, lo)
	expectIDs(t, query(t, s, nostr.Filter{Kinds: []int{0}}, Visibility{}), lo)
	if err := s.Save(context.Background(), hi); !errors.Is(err, ErrReplaced) {
		t.Fatalf("tie loser: %v, want ErrReplaced", err)
	}
	// kind 3 and 10002 are independent coordinates; tags gone with the old version
	c1 := ev(t, k, 3, 1, nostr.Tags{{"p", "a"}}, "")
	c2 := ev(t, k, 3, 2, nostr.Tags{{"p", "b"}}, "")
	r := ev(t, k, 10002, 1, nil, "")
	mustSave(t, s, c1, c2, r)
	expectIDs(t, query(t, s, nostr.Filter{Kinds: []int{3, 10002}}, Visibility{}), c2, r)
	expectIDs(t, query(t, s, nostr.Filter{Tags: nostr.TagMap{"p": {"a"}}}, Visibility{}))
	// another author's kind 0 is separate
	k2 := newKey(t)
	o := ev(t, k2, 0, 1, nil, "")
	mustSave(t, s, o)
	expectIDs(t, query(t, s, nostr.Filter{Kinds: []int{0}}, Visibility{}), lo, o)
}

func TestReplaceableWithinOneBatch(t *testing.T) {
	s, _, _ := openTest(t)
	k := newKey(t)
	var evts []*nostr.Event
	for i := 0; i < 50; i++ {
		evts = append(evts, ev(t, k, 10000, int64(i), nil, fmt.Sprint(i)))
	}
	var wg sync.WaitGroup
	var okCount atomic.Int64
	// newest first in one batch: all but the first are ErrReplaced
	for i := len(evts) - 1; i >= 0; i-- {
		wg.Add(1)
		s.SaveAsync(evts[i], func(err error) {
			if err == nil {
				okCount.Add(1)
			} else if !errors.Is(err, ErrReplaced) {
				t.Errorf("unexpected %v", err)
			}
			wg.Done()
		})
	}
	wg.Wait()
	if okCount.Load() != 1 {
		t.Fatalf("%d accepted, want 1", okCount.Load())
	}
	expectIDs(t, query(t, s, nostr.Filter{Kinds: []int{10000}}, Visibility{}), evts[49])
}

func TestAddressable(t *testing.T) {
	s, _, _ := openTest(t)
	k := newKey(t)
	a1 := ev(t, k, 30023, 1, nostr.Tags{{"d", "a"}}, "a1")
	a2 := ev(t, k, 30023, 2, nostr.Tags{{"d", "a"}, {"d", "ignored"}}, "a2")
	b1 := ev(t, k, 30023, 1, nostr.Tags{{"d", "b"}}, "b1")
	n1 := ev(t, k, 30023, 1, nil, "no d")
	n2 := ev(t, k, 30023, 3, nostr.Tags{{"d", ""}}, "empty d")
	other := ev(t, k, 30024, 1, nostr.Tags{{"d", "a"}}, "other kind")
	mustSave(t, s, a1, a2, b1, n1, n2, other)
	expectIDs(t, query(t, s, nostr.Filter{Kinds: []int{30023, 30024}}, Visibility{}), append([]*nostr.Event{n2, a2}, sortedByID(other, b1)...)...)
	if err := s.Save(context.Background(), a1); !errors.Is(err, ErrReplaced) {
		t.Fatalf("old addressable: %v, want ErrReplaced", err)
	}
}

func TestEphemeralNotStored(t *testing.T) {
	s, _, _ := openTest(t)
	k := newKey(t)
	e := ev(t, k, 20001, 1, nil, "typing")
	mustSave(t, s, e)
	done := make(chan error, 1)
	s.SaveAsync(e, func(err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	expectIDs(t, query(t, s, nostr.Filter{}, Visibility{}))
}

func deletion(t testing.TB, k key, at int64, tags nostr.Tags) *nostr.Event {
	return ev(t, k, 5, at, tags, "")
}

func TestDeletionByAuthor(t *testing.T) {
	s, _, _ := openTest(t)
	alice, mallory := newKey(t), newKey(t)
	note := ev(t, alice, 1, 1, nostr.Tags{{"t", "x"}}, "note")
	keep := ev(t, alice, 1, 2, nil, "keep")
	mustSave(t, s, note, keep)

	// a stranger's deletion is stored but deletes nothing
	md := deletion(t, mallory, 3, nostr.Tags{{"e", note.ID}, {"e", keep.ID}})
	mustSave(t, s, md)
	if !has(t, s, note.ID) || !has(t, s, keep.ID) {
		t.Fatal("stranger deleted alice's note")
	}

	d := deletion(t, alice, 4, nostr.Tags{{"e", note.ID}, {"e", "not-hex"}})
	mustSave(t, s, d)
	if has(t, s, note.ID) {
		t.Fatal("note still there after author's deletion")
	}
	if !has(t, s, keep.ID) || !has(t, s, d.ID) || !has(t, s, md.ID) {
		t.Fatal("wrong events deleted")
	}
	if got := query(t, s, nostr.Filter{Tags: nostr.TagMap{"t": {"x"}}}, Visibility{}); len(got) != 0 {
		t.Fatal("tag rows of deleted event still match")
	}
	if err := s.Save(context.Background(), note); !errors.Is(err, ErrDeleted) {
		t.Fatalf("republish: %v, want ErrDeleted", err)
	}
	// mallory "deleted" keep too, but was not allowed: keep may be re-published? it is a duplicate.
	if err := s.Save(context.Background(), keep); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("keep: %v, want ErrDuplicate", err)
	}
	// a kind-5 is never deleted by another kind-5
	dd := deletion(t, alice, 5, nostr.Tags{{"e", d.ID}})
	mustSave(t, s, dd)
	if !has(t, s, d.ID) {
		t.Fatal("deletion event was deleted")
	}
	if err := s.Save(context.Background(), d); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("re-save deletion: %v, want ErrDuplicate", err)
	}
}

func TestDeletionBeforeTarget(t *testing.T) {
	s, _, _ := openTest(t)
	alice, mallory := newKey(t), newKey(t)
	note := ev(t, alice, 1, 1, nil, "note")
	other := ev(t, alice, 1, 1, nil, "other")
	mustSave(t, s, deletion(t, alice, 2, nostr.Tags{{"e", note.ID}}))
	mustSave(t, s, deletion(t, mallory, 2, nostr.Tags{{"e", other.ID}}))
	if err := s.Save(context.Background(), note); !errors.Is(err, ErrDeleted) {
		t.Fatalf("target after deletion: %v, want ErrDeleted", err)
	}
	// deleted by someone not allowed to: accepted
	mustSave(t, s, other)
	if !has(t, s, other.ID) || has(t, s, note.ID) {
		t.Fatal("wrong state")
	}
}

func TestGiftWrapDeletionByRecipient(t *testing.T) {
	s, _, _ := openTest(t)
	bob, eph, mallory := newKey(t), newKey(t), newKey(t)
	wrap := ev(t, eph, 1059, 1, nostr.Tags{{"p", bob.pk}}, "sealed")
	wrap2 := ev(t, eph, 1059, 2, nostr.Tags{{"p", bob.pk}}, "sealed2")
	notWrap := ev(t, eph, 1, 1, nostr.Tags{{"p", bob.pk}}, "mentions bob")
	mustSave(t, s, wrap, notWrap)

	mustSave(t, s, deletion(t, mallory, 3, nostr.Tags{{"e", wrap.ID}}))
	if !has(t, s, wrap.ID) {
		t.Fatal("stranger deleted a gift wrap")
	}
	mustSave(t, s, deletion(t, bob, 3, nostr.Tags{{"e", wrap.ID}, {"e", notWrap.ID}}))
	if has(t, s, wrap.ID) {
		t.Fatal("recipient could not delete the gift wrap")
	}
	if !has(t, s, notWrap.ID) {
		t.Fatal("p-tagged recipient deleted a non-gift-wrap event")
	}
	if err := s.Save(context.Background(), wrap); !errors.Is(err, ErrDeleted) {
		t.Fatalf("republished wrap: %v, want ErrDeleted", err)
	}
	// deletion by recipient before the wrap arrives
	mustSave(t, s, deletion(t, bob, 4, nostr.Tags{{"e", wrap2.ID}}))
	if err := s.Save(context.Background(), wrap2); !errors.Is(err, ErrDeleted) {
		t.Fatalf("wrap after recipient's deletion: %v, want ErrDeleted", err)
	}
}

func TestDeletionByCoordinate(t *testing.T) {
	s, _, _ := openTest(t)
	alice, mallory := newKey(t), newKey(t)
	art := ev(t, alice, 30023, 10, nostr.Tags{{"d", "post:1"}}, "v1")
	otherD := ev(t, alice, 30023, 10, nostr.Tags{{"d", "post:2"}}, "other")
	prof := ev(t, alice, 10002, 10, nil, "relays")
	mustSave(t, s, art, otherD, prof)

	// stranger naming alice's coordinate: ignored
	mustSave(t, s, deletion(t, mallory, 20, nostr.Tags{{"a", "30023:" + alice.pk + ":post:1"}}))
	if !has(t, s, art.ID) {
		t.Fatal("stranger deleted by coordinate")
	}
	// mallory's deletion of her own coordinate must not block alice
	if err := s.Save(context.Background(), ev(t, alice, 30023, 11, nostr.Tags{{"d", "post:1"}}, "v1b")); err != nil {
		t.Fatal(err)
	}

	mustSave(t, s, deletion(t, alice, 20, nostr.Tags{
		{"a", "30023:" + alice.pk + ":post:1"},
		{"a", "10002:" + alice.pk + ":"},
		{"a", "garbage"},
	}))
	got := query(t, s, nostr.Filter{Authors: []string{alice.pk}, Kinds: []int{30023, 10002}}, Visibility{})
	expectIDs(t, got, otherD)
	// an older or equal version at a deleted coordinate is blocked
	for _, at := range []int64{15, 20} {
		e := ev(t, alice, 30023, at, nostr.Tags{{"d", "post:1"}}, fmt.Sprint(at))
		if err := s.Save(context.Background(), e); !errors.Is(err, ErrDeleted) {
			t.Fatalf("version at %d: %v, want ErrDeleted", at, err)
		}
	}
	if err := s.Save(context.Background(), ev(t, alice, 10002, 19, nil, "old relays")); !errors.Is(err, ErrDeleted) {
		t.Fatalf("replaceable at deleted coordinate: %v, want ErrDeleted", err)
	}
	// a newer version is accepted
	newer := ev(t, alice, 30023, 21, nostr.Tags{{"d", "post:1"}}, "v2")
	mustSave(t, s, newer)
	// coordinate deletion arriving before the target also blocks it
	mustSave(t, s, deletion(t, alice, 50, nostr.Tags{{"a", "30000:" + alice.pk + ":list"}}))
	if err := s.Save(context.Background(), ev(t, alice, 30000, 40, nostr.Tags{{"d", "list"}}, "")); !errors.Is(err, ErrDeleted) {
		t.Fatalf("target after coordinate deletion: %v, want ErrDeleted", err)
	}
}

func TestExpiration(t *testing.T) {
	s, clk, _ := openTest(t)
	k := newKey(t)
	exp := func(at int64) nostr.Tags {
		return nostr.Tags{{"expiration", fmt.Sprint(baseTime.Unix() + at)}, {"t", "x"}}
	}
	soon := ev(t, k, 1, 0, exp(10), "soon")
	later := ev(t, k, 1, 0, exp(100), "later")
	never := ev(t, k, 1, 0, nostr.Tags{{"t", "x"}}, "never")
	bogus := ev(t, k, 1, 0, nostr.Tags{{"expiration", "soon"}, {"t", "x"}}, "bogus")
	mustSave(t, s, soon, later, never, bogus)
	if err := s.Save(context.Background(), ev(t, k, 1, 0, exp(0), "already")); !errors.Is(err, ErrExpired) {
		t.Fatalf("already expired: %v, want ErrExpired", err)
	}
	f := nostr.Filter{Tags: nostr.TagMap{"t": {"x"}}}
	if n, _ := s.Count(context.Background(), f, Visibility{}); n != 4 {
		t.Fatalf("count before = %d", n)
	}
	clk.Set(baseTime.Add(10 * time.Second)) // expiration <= now is expired
	got := query(t, s, f, Visibility{})
	if len(got) != 3 || slices.Contains(ids(got), soon.ID) {
		t.Fatalf("expired event visible: %v", short(ids(got)))
	}
	if n, _ := s.Count(context.Background(), nostr.Filter{}, Visibility{}); n != 3 {
		t.Fatalf("Count = %d, want 3", n)
	}
	n, err := s.SweepExpired(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("SweepExpired = %d, %v; want 1", n, err)
	}
	st, _ := s.Stats(context.Background())
	if st.Events != 3 || st.Tags != 3 {
		t.Fatalf("after sweep: %+v", st)
	}
	clk.Set(baseTime.Add(1000 * time.Second))
	if n, _ := s.SweepExpired(context.Background()); n != 1 {
		t.Fatalf("second sweep = %d", n)
	}
	expectIDs(t, query(t, s, nostr.Filter{}, Visibility{}), sortedByID(never, bogus)...)
}

// A newer version of a replaceable or addressable event that has expired is
// gone (NIP-40) even before the sweeper deletes it: an older version
// published then is stored, not answered "duplicate" and dropped.
func TestExpiredVersionDoesNotBlockAnOlderOne(t *testing.T) {
	for _, kind := range []int{10002, 30023} {
		s, clk, _ := openTest(t)
		k := newKey(t)
		var d nostr.Tags
		if kind >= 30000 {
			d = nostr.Tags{{"d", "x"}}
		}
		newer := ev(t, k, kind, 20, append(slices.Clone(d), nostr.Tag{"expiration", fmt.Sprint(baseTime.Unix() + 30)}), "newer, expiring")
		older := ev(t, k, kind, 10, d, "older, lasting")
		mustSave(t, s, newer)
		if err := s.Save(context.Background(), older); !errors.Is(err, ErrReplaced) {
			t.Fatalf("kind %d: older version while the newer lives: %v, want ErrReplaced", kind, err)
		}
		clk.Set(baseTime.Add(30 * time.Second)) // expired, not swept
		if err := s.Save(context.Background(), older); err != nil {
			t.Fatalf("kind %d: older version after the newer expired: %v, want it stored", kind, err)
		}
		expectIDs(t, query(t, s, nostr.Filter{Kinds: []int{kind}, Authors: []string{k.pk}}, Visibility{}), older)
		if n, err := s.SweepExpired(context.Background()); err != nil || n != 0 {
			t.Fatalf("kind %d: SweepExpired = %d, %v; want 0 (the expired version was replaced)", kind, n, err)
		}
	}
}

func sortedByID(evts ...*nostr.Event) []*nostr.Event {
	slices.SortFunc(evts, func(a, b *nostr.Event) int { return strings.Compare(a.ID, b.ID) })
	return evts
}

func TestDurabilityAcrossReopen(t *testing.T) {
	clk := &testClock{t: baseTime}
	path := t.TempDir() + "/d.db"
	opts := Options{Path: path, Now: clk.Now, Logger: quietLogger()}
	s, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	k := newKey(t)
	e := ev(t, k, 1, 1, nostr.Tags{{"p", k.pk}}, "durable")
	mustSave(t, s, e)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Save(context.Background(), e); !errors.Is(err, ErrClosed) {
		t.Fatalf("Save after Close: %v", err)
	}
	s2, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close()
	expectIDs(t, query(t, s2, nostr.Filter{Tags: nostr.TagMap{"p": {k.pk}}}, Visibility{}), e)
}

func TestMigrations(t *testing.T) {
	first, _, path := openTest(t)
	ctx := context.Background()
	first.Close()
	// reopening an existing (current) database works
	s, err := Open(ctx, Options{Path: path, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	var v int
	if err := s.rdb.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != SchemaVersion {
		t.Fatalf("user_version = %d, %v; want %d", v, err, SchemaVersion)
	}
	if _, err := s.w.conn.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version=%d", SchemaVersion+1)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = Open(ctx, Options{Path: path, Logger: quietLogger()})
	if err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("future schema: err = %v, want refusal", err)
	}
}

func TestFileMode(t *testing.T) {
	_, _, path := openTest(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	if fi, err := os.Stat(path + "-wal"); err == nil && fi.Mode().Perm() != 0o600 {
		t.Fatalf("wal mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := Open(context.Background(), Options{Path: t.TempDir() + "/missing/dir/x.db"}); err == nil {
		t.Fatal("Open in a missing directory succeeded")
	}
	if _, err := Open(context.Background(), Options{Path: t.TempDir() + "/x.db", Synchronous: "OFF"}); err == nil {
		t.Fatal("Synchronous=OFF accepted")
	}
}

// presign creates n signed kind-1 events from a few keys, in parallel.
func presign(t testing.TB, n int) []*nostr.Event {
	keys := []key{newKey(t), newKey(t), newKey(t), newKey(t)}
	out := make([]*nostr.Event, n)
	var wg sync.WaitGroup
	workers := 4
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				k := keys[i%len(keys)]
				e := &nostr.Event{PubKey: k.pk, CreatedAt: nostr.Timestamp(baseTime.Unix() + int64(i%1000)),
					Kind: 1, Tags: nostr.Tags{{"t", fmt.Sprint(i % 7)}}, Content: fmt.Sprint("n", i)}
				if err := e.Sign(k.sk); err != nil {
					panic(err)
				}
				out[i] = e
			}
		}()
	}
	wg.Wait()
	return out
}

func TestConcurrentSaves(t *testing.T) {
	s, _, _ := openTest(t, func(o *Options) { o.MaxBatch = 64 })
	evts := presign(t, 2000)
	var wg sync.WaitGroup
	errs := make(chan error, len(evts))
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < len(evts); i += 16 {
				if i%2 == 0 {
					errs <- s.Save(context.Background(), evts[i])
				} else {
					var inner sync.WaitGroup
					inner.Add(1)
					s.SaveAsync(evts[i], func(err error) { errs <- err; inner.Done() })
					inner.Wait()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.Count(context.Background(), nostr.Filter{}, Visibility{})
	if err != nil || n != int64(len(evts)) {
		t.Fatalf("Count = %d, %v; want %d", n, err, len(evts))
	}
}

func TestCloseWithSavesInFlight(t *testing.T) {
	clk := &testClock{t: baseTime}
	path := t.TempDir() + "/c.db"
	opts := Options{Path: path, Now: clk.Now, Logger: quietLogger(), MaxBatch: 32}
	s, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	evts := presign(t, 3000)
	var acked sync.Map
	var ackedN, closedN atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < len(evts); i += 8 {
				e := evts[i]
				wg.Add(1)
				s.SaveAsync(e, func(err error) {
					defer wg.Done()
					switch {
					case err == nil:
						acked.Store(e.ID, true)
						ackedN.Add(1)
					case errors.Is(err, ErrClosed):
						closedN.Add(1)
					default:
						t.Errorf("unexpected error %v", err)
					}
				})
			}
		}()
	}
	time.Sleep(5 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	if ackedN.Load()+closedN.Load() != int64(len(evts)) {
		t.Fatalf("acked %d + closed %d != %d: a callback was lost or doubled", ackedN.Load(), closedN.Load(), len(evts))
	}
	t.Logf("acked %d, refused %d", ackedN.Load(), closedN.Load())
	s2, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	stored := map[string]bool{}
	err = s2.QueryRaw(context.Background(), nostr.Filter{Limit: len(evts) + 1}, Visibility{}, func(raw []byte) error {
		var e nostr.Event
		if err := e.UnmarshalJSON(raw); err != nil {
			return err
		}
		stored[e.ID] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	acked.Range(func(k, _ any) bool {
		if !stored[k.(string)] {
			t.Errorf("acked event %s lost", k.(string)[:8])
		}
		return true
	})
}

func TestSaveContextCancelled(t *testing.T) {
	s, _, _ := openTest(t)
	k := newKey(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.Save(ctx, ev(t, k, 1, 1, nil, "x"))
	if err == nil {
		t.Fatal("Save with cancelled context returned nil") // could only be nil if committed
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

// TestQueryPlans checks that each filter shape is served by the intended index.
func distinctHex(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%064x", i+1)
	}
	return out
}

func TestQueryPlans(t *testing.T) {
	s, _, _ := openTest(t)
	pk := strings.Repeat("ab", 32)
	recent := ev(t, newKey(t), 1, 0, nil, "stored since the last merge")
	mustSave(t, s, recent)
	// byID: the events are looked up by the seqs the id index gives,
	// whatever else the filter names.
	const byID = "SEARCH e USING INTEGER PRIMARY KEY (rowid=?)"
	since, until := nostr.Timestamp(1), nostr.Timestamp(2_000_000_000)
	// sorts: the plan may sort the candidates (several index ranges to merge);
	// the single-range shapes must stream in index order and stop at the limit.
	cases := []struct {
		f     nostr.Filter
		v     Visibility
		want  string
		sorts bool
	}{
		{nostr.Filter{Authors: []string{pk}, Kinds: []int{1}}, Visibility{}, "INDEX events_pubkey_kind_created", false},
		// several authors and kinds: one arm per pair, merged in time order
		{nostr.Filter{Authors: []string{pk, strings.Repeat("cd", 32)}, Kinds: []int{1, 7}}, Visibility{PrivateKinds: []int{1059}}, "MERGE (UNION ALL)", false},
		{nostr.Filter{Authors: distinctHex(maxMergeArms), Kinds: []int{1}}, Visibility{}, "SEARCH e USING INDEX events_pubkey_kind_created (pubkey=? AND kind=?)", false},
		{nostr.Filter{Authors: []string{pk}, Kinds: []int{1, 6, 7, 1059}, Tags: nostr.TagMap{"t": {"a", "b"}}}, Visibility{PrivateKinds: []int{1059}, Readers: []string{pk}}, "MERGE (UNION ALL)", false},
		{nostr.Filter{Tags: nostr.TagMap{"p": {pk}}, Limit: 500}, Visibility{PrivateKinds: []int{1059}, Readers: []string{pk}}, "PRIMARY KEY (name=? AND value=?)", false},
		{nostr.Filter{Tags: nostr.TagMap{"p": {pk, "x"}}}, Visibility{}, "PRIMARY KEY (name=? AND value=?)", true},
		{nostr.Filter{IDs: []string{pk, strings.Repeat("01", 32)}}, Visibility{}, "SEARCH ids USING PRIMARY KEY (id=?)", true},
		{nostr.Filter{IDs: []string{pk}}, Visibility{}, "SEARCH ids USING PRIMARY KEY (id=?)", true},
		// an id indexed in memory: its seq joins the ids subquery
		{nostr.Filter{IDs: []string{recent.ID}}, Visibility{}, "SEARCH ids USING PRIMARY KEY (id=?)", true},
		{nostr.Filter{IDs: []string{recent.ID, pk}}, Visibility{}, "SEARCH ids USING PRIMARY KEY (id=?)", true},
		// ids with kinds, authors or a tag: still the id index, never a walk of a kind
		{nostr.Filter{IDs: []string{pk}, Kinds: []int{1}}, Visibility{}, byID, true},
		{nostr.Filter{IDs: []string{pk, recent.ID}, Kinds: []int{1, 7}}, Visibility{PrivateKinds: []int{1059}}, byID, true},
		{nostr.Filter{IDs: []string{pk}, Authors: []string{pk}, Kinds: []int{1}}, Visibility{}, byID, true},
		{nostr.Filter{IDs: []string{pk}, Authors: []string{pk}}, Visibility{}, byID, true},
		{nostr.Filter{IDs: []string{pk}, Tags: nostr.TagMap{"p": {pk}}}, Visibility{}, byID, true},
		{nostr.Filter{IDs: []string{pk}, Kinds: []int{1}, Since: &since, Until: &until}, Visibility{}, byID, true},
		{nostr.Filter{IDs: []string{pk}}, Visibility{PrivateKinds: []int{1059}, Readers: []string{pk}}, byID, true},
		// long lists, bound as one JSON array; the planner cannot size it,
		// and walks the kind's index newest first, stopping at the limit
		{nostr.Filter{Authors: distinctHex(maxInlineValues + 1), Kinds: []int{1}}, Visibility{}, "INDEX events_kind_created", false},
		{nostr.Filter{IDs: distinctHex(maxInlineValues + 1)}, Visibility{}, "SEARCH ids USING PRIMARY KEY (id=?)", true},
		{nostr.Filter{Tags: nostr.TagMap{"p": distinctHex(maxInlineValues + 1)}}, Visibility{}, "PRIMARY KEY (name=? AND value=?)", true},
		{nostr.Filter{Kinds: []int{1}}, Visibility{}, "INDEX events_kind_created", false},
		{nostr.Filter{}, Visibility{}, "INDEX events_created", false},
	}
	for _, c := range cases {
		q, ok := s.buildQuery(c.f, c.v, selectRows, true)
		if !ok {
			t.Fatalf("%v: no query", c.f)
		}
		if slices.Contains(c.f.IDs, recent.ID) != strings.Contains(q.sql, "UNION ALL SELECT value FROM json_each") {
			t.Errorf("filter %v: the seqs of recent ids are joined only if asked for: %s", c.f, q.sql)
		}
		rows, err := s.rdb.Query("EXPLAIN QUERY PLAN "+q.sql+" ORDER BY "+q.orderCol+" DESC LIMIT 500", q.args...)
		if err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		joined := strings.Join(plan, " | ")
		t.Logf("%.200v\n  %.300s\n  %s", c.f, q.sql, joined)
		if !strings.Contains(joined, c.want) {
			t.Errorf("filter %v: plan %q does not use index %s", c.f, joined, c.want)
		}
		if !c.sorts && strings.Contains(joined, "TEMP B-TREE") {
			t.Errorf("filter %v: plan %q sorts every candidate instead of walking the index", c.f, joined)
		}
		if strings.Contains(strings.ReplaceAll(joined, "SCAN json_each", ""), "SCAN ") && c.want != "INDEX events_created" {
			t.Errorf("filter %v: plan %q has a full scan", c.f, joined)
		}
	}
}

// The stored JSON must decode to exactly the signed bytes, whatever the
// content: escapes, control characters, HTML characters, non-ASCII. Invalid
// UTF-8 is refused: JSON text is UTF-8, and a websocket text frame carrying it
// would be rejected by clients.
func TestStoredJSONKeepsSignedBytes(t *testing.T) {
	s, _, _ := openTest(t)
	k := newKey(t)
	for i, c := range []string{"a \"quote\" and a \\ backslash", "<script>&amp;</script>", "ctl \x00\x01\x08\t\n\x0b\x0c\r\x1f\x7f",
		"ünïcödé ✓ 🚀 \u2028\u2029", ""} {
		e := ev(t, k, 1, int64(i), nostr.Tags{{"t", c}, {"x", c, c}}, c)
		mustSave(t, s, e)
		got := query(t, s, nostr.Filter{IDs: []string{e.ID}}, Visibility{})
		if len(got) != 1 {
			t.Fatalf("%q: stored event not found", c)
		}
		g := got[0]
		if g.Content != c || g.Tags[0][1] != c || g.Tags[1][2] != c {
			t.Errorf("%q: came back as content %q, tags %q", c, g.Content, g.Tags)
		}
		if !g.CheckID() {
			t.Errorf("%q: stored event's id no longer matches", c)
		}
		if ok, _ := g.CheckSignature(); !ok {
			t.Errorf("%q: stored event no longer verifies", c)
		}
	}
	for _, bad := range []nostr.Tags{{{"t", "ok"}}, {{"t", "\xff"}}} {
		content := "\xff\xfe not utf-8"
		if bad[0][1] == "\xff" {
			content = "fine"
		}
		e := ev(t, k, 1, 99, bad, content)
		if err := s.Save(context.Background(), e); !errors.Is(err, ErrInvalid) {
			t.Errorf("invalid UTF-8 (content %q, tags %q): Save = %v, want ErrInvalid", content, bad, err)
		}
	}
}

// holdWriter parks the writer goroutine on a job until the returned func is
// called, so that everything saved meanwhile lands in one batch.
func holdWriter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	started, gate := make(chan struct{}), make(chan struct{})
	if err := s.enqueue(context.Background(), &request{done: func(error) {}, job: func(*writer) error {
		close(started)
		<-gate
		return nil
	}}); err != nil {
		t.Fatal(err)
	}
	<-started
	return func() { close(gate) }
}

// saveAsOneBatch queues evts while the writer is held, so that they go in
// as one batch, and returns each one's result.
func saveAsOneBatch(t *testing.T, s *Store, evts []*nostr.Event) []error {
	t.Helper()
	release := holdWriter(t, s)
	var wg sync.WaitGroup
	errs := make([]error, len(evts))
	for i, e := range evts {
		wg.Add(1)
		s.SaveAsync(e, func(err error) { errs[i] = err; wg.Done() })
	}
	release()
	wg.Wait()
	return errs
}

// One batch mixing plain events (the multi-row insert), duplicates of them
// within the batch and of stored events, an event deleted before it arrived,
// a deletion of an event earlier in the same batch, and a replaceable: every
// event gets its own outcome and the stored set, tags included, is exact.
func TestMixedBatchOutcomes(t *testing.T) {
	s, _, _ := openTest(t)
	k, other := newKey(t), newKey(t)
	stored := ev(t, k, 1, 0, nostr.Tags{{"t", "old"}}, "already stored")
	deletedEarly := ev(t, k, 1, 1, nil, "deleted before it arrived")
	mustSave(t, s, stored, ev(t, k, 5, 2, nostr.Tags{{"e", deletedEarly.ID}}, ""))

	var plain []*nostr.Event
	for i := range 150 {
		plain = append(plain, ev(t, k, 1, int64(10+i), nostr.Tags{{"t", "x"}, {"p", other.pk}}, fmt.Sprint(i)))
	}
	victim := plain[7]
	deletion := ev(t, k, 5, 500, nostr.Tags{{"e", victim.ID}}, "")
	repl := ev(t, k, 0, 501, nil, "profile")

	type want struct {
		e   *nostr.Event
		err error
	}
	var wants []want
	for i, e := range plain {
		wants = append(wants, want{e, nil})
		switch i {
		case 20:
			wants = append(wants, want{plain[3], ErrDuplicate}, want{stored, ErrDuplicate}, want{deletedEarly, ErrDeleted})
		case 70:
			wants = append(wants, want{deletion, nil}, want{repl, nil})
		}
	}
	var sent []*nostr.Event
	for _, w := range wants {
		sent = append(sent, w.e)
	}
	got := saveAsOneBatch(t, s, sent)
	for i, w := range wants {
		if !errors.Is(got[i], w.err) && got[i] != w.err {
			t.Errorf("event %d (%q): got %v, want %v", i, w.e.Content, got[i], w.err)
		}
	}
	all := query(t, s, nostr.Filter{Authors: []string{k.pk}, Limit: 1000}, Visibility{})
	if len(all) != 1+1+150-1+1+1 { // stored, first deletion, plain minus the victim, deletion, profile
		t.Fatalf("%d events stored, want 153", len(all))
	}
	if has(t, s, victim.ID) || has(t, s, deletedEarly.ID) {
		t.Fatal("a deleted event is stored")
	}
	tagged := query(t, s, nostr.Filter{Tags: nostr.TagMap{"p": {other.pk}}, Limit: 1000}, Visibility{})
	if len(tagged) != 149 {
		t.Fatalf("#p finds %d events, want 149 (the victim's tag rows must go with it)", len(tagged))
	}
	st, _ := s.Stats(context.Background())
	if wantTags := int64(1 + 1 + 149*2 + 1); st.Tags != wantTags { // old t, e of deletion 1, 149×(t,p), e of deletion 2
		t.Fatalf("%d tag rows, want %d", st.Tags, wantTags)
	}
}

func TestPageSize(t *testing.T) {
	pageSize := func(s *Store) int {
		var n int
		if err := s.rdb.QueryRow("PRAGMA page_size").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	s, _, path := openTest(t)
	if got := pageSize(s); got != 8192 {
		t.Fatalf("new database: page size %d, want the default 8192", got)
	}
	old := filepath.Join(t.TempDir(), "old.db")
	s4, err := Open(context.Background(), Options{Path: old, PageSize: 4096, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	mustSave(t, s4, ev(t, newKey(t), 1, 0, nil, "x"))
	s4.Close()
	s4, err = Open(context.Background(), Options{Path: old, Logger: quietLogger()}) // default 8192 asked
	if err != nil {
		t.Fatal(err)
	}
	defer s4.Close()
	if got := pageSize(s4); got != 4096 {
		t.Fatalf("existing database: page size %d, want its own 4096", got)
	}
	if got := len(query(t, s4, nostr.Filter{}, Visibility{})); got != 1 {
		t.Fatalf("existing database: %d events after reopen, want 1", got)
	}
	for _, bad := range []int{100, 3000, 131072, -1} {
		if _, err := Open(context.Background(), Options{Path: path + "x", PageSize: bad}); err == nil || !strings.Contains(err.Error(), "PageSize") {
			t.Errorf("PageSize %d: err %v", bad, err)
		}
	}
}

// The id index is log-structured (the recent ids in memory, merged into
// ids). With merges every few events, ids live in both: duplicates are still
// refused, REQ by ids finds events in either, deletion and replacement
// remove their ids, and a reopened store carries on.
func TestIDIndexMerges(t *testing.T) {
	setMergeAt(t, 7)
	s, _, path := openTest(t)
	k := newKey(t)
	var evts []*nostr.Event
	for i := range 40 {
		e := ev(t, k, 1, int64(i), nostr.Tags{{"t", "m"}}, fmt.Sprint(i))
		evts = append(evts, e)
		mustSave(t, s, e)
	}
	// indexed checks the invariant of schema 4 (ids holds exactly the
	// stored events up to ids_merged.seq, the recent ids every one above)
	// and returns how many events are indexed either way.
	indexed := func(s *Store) (merged, recent int) {
		t.Helper()
		var below, inIDs, above int
		if err := s.rdb.QueryRow(`SELECT
			(SELECT count(*) FROM events WHERE seq <= (SELECT seq FROM ids_merged)),
			(SELECT count(*) FROM ids JOIN events USING (seq, id)),
			(SELECT count(*) FROM events WHERE seq > (SELECT seq FROM ids_merged))`).Scan(&below, &inIDs, &above); err != nil {
			t.Fatal(err)
		}
		var all int
		if err := s.rdb.QueryRow("SELECT count(*) FROM ids").Scan(&all); err != nil {
			t.Fatal(err)
		}
		if all != inIDs || inIDs != below {
			t.Fatalf("ids holds %d rows, %d of them stored events, for %d events up to the merge", all, inIDs, below)
		}
		rows, err := s.rdb.Query("SELECT id, seq FROM events WHERE seq > (SELECT seq FROM ids_merged)")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var id []byte
			var seq int64
			if err := rows.Scan(&id, &seq); err != nil {
				t.Fatal(err)
			}
			if got, ok := s.recent.get(id); !ok || got != seq {
				t.Fatalf("event %d (%x) not among the recent ids (%d, %v)", seq, id, got, ok)
			}
		}
		return inIDs, above
	}
	if merged, recent := indexed(s); merged+recent != 40 || merged == 0 || recent >= mergeAt {
		t.Fatalf("ids %d + recent %d, want 40 with merges done", merged, recent)
	}
	for _, e := range []*nostr.Event{evts[0], evts[39]} { // merged long ago; just saved
		if err := s.Save(context.Background(), e); !errors.Is(err, ErrDuplicate) {
			t.Fatalf("duplicate of %q: %v", e.Content, err)
		}
	}
	got := query(t, s, nostr.Filter{IDs: []string{evts[0].ID, evts[20].ID, evts[39].ID}}, Visibility{})
	expectIDs(t, got, evts[39], evts[20], evts[0])

	mustSave(t, s, ev(t, k, 5, 100, nostr.Tags{{"e", evts[0].ID}, {"e", evts[39].ID}}, ""))
	if has(t, s, evts[0].ID) || has(t, s, evts[39].ID) {
		t.Fatal("deleted events still served")
	}
	if m, r := indexed(s); m+r != 40-2+1 {
		t.Fatalf("%d ids indexed after deleting 2 and adding 1, want 39", m+r)
	}
	// A replaceable replaced across a merge leaves only the newest id.
	for i := range 10 {
		mustSave(t, s, ev(t, k, 10002, int64(200+i), nil, fmt.Sprint(i)))
	}
	if got := query(t, s, nostr.Filter{Kinds: []int{10002}}, Visibility{}); len(got) != 1 {
		t.Fatalf("%d versions of a replaceable stored", len(got))
	}
	if m, r := indexed(s); m+r != 40 {
		t.Fatalf("%d ids indexed, want 40 (39 + the replaceable's last version)", m+r)
	}
	// Leave some events unmerged: the reopened store must index them again.
	var tail []*nostr.Event
	for _, recent := indexed(s); recent == 0; _, recent = indexed(s) {
		e := ev(t, k, 1, int64(250+len(tail)), nil, fmt.Sprint("tail ", len(tail)))
		tail = append(tail, e)
		mustSave(t, s, e)
	}
	_, unmerged := indexed(s)
	s.Close()

	s2, err := Open(context.Background(), Options{Path: path, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, r := indexed(s2); r != unmerged || s2.recent.len() != unmerged {
		t.Fatalf("after reopen, %d events above the merge and %d recent ids, want %d", r, s2.recent.len(), unmerged)
	}
	rows, err := s2.rdb.Query("SELECT raw FROM events WHERE seq > (SELECT seq FROM ids_merged)")
	if err != nil {
		t.Fatal(err)
	}
	var again []*nostr.Event
	for rows.Next() {
		var raw []byte
		var e nostr.Event
		if err := rows.Scan(&raw); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatal(err)
		}
		again = append(again, &e)
	}
	rows.Close()
	for _, e := range append(again, evts[5]) { // unmerged ones, and one merged long ago
		if err := s2.Save(context.Background(), e); !errors.Is(err, ErrDuplicate) {
			t.Fatalf("after reopen, duplicate of %q: %v", e.Content, err)
		}
		expectIDs(t, query(t, s2, nostr.Filter{IDs: []string{e.ID}}, Visibility{}), e)
	}
	late := ev(t, k, 1, 300, nil, "after reopen")
	mustSave(t, s2, late)
	expectIDs(t, query(t, s2, nostr.Filter{IDs: []string{late.ID, evts[5].ID}}, Visibility{}), late, evts[5])
}

// A store written by schema 2 (a unique index on events.id) migrates to the
// two-tree id index with every id in it.
func TestMigrateV2IDIndex(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v2.db")
	ctx := context.Background()
	k := newKey(t)
	var evts []*nostr.Event
	atSchema(t, path, 2, func(conn *sql.Conn) {
		for i := range 5 {
			e := ev(t, k, 1, int64(i), nostr.Tags{{"t", "v2"}}, fmt.Sprint(i))
			evts = append(evts, e)
			insertRow(t, conn, int64(i+1), e)
		}
	})

	s, err := Open(ctx, Options{Path: path, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var v, merged int
	if err := s.rdb.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != SchemaVersion {
		t.Fatalf("user_version %d (%v), want %d", v, err, SchemaVersion)
	}
	if err := s.rdb.QueryRow("SELECT count(*) FROM ids").Scan(&merged); err != nil || merged != 5 {
		t.Fatalf("ids holds %d (%v), want the 5 migrated", merged, err)
	}
	if err := s.Save(ctx, evts[2]); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("duplicate of a migrated event: %v", err)
	}
	expectIDs(t, query(t, s, nostr.Filter{IDs: []string{evts[1].ID, evts[3].ID}}, Visibility{}), evts[3], evts[1])
}

// A long run of plain events in one batch goes in through bulk, several
// chunks of it: every column and tag row must be what a one-by-one insert
// writes, including NULL and non-NULL expirations and an event whose tag
// rows span several multi-row statements.
func TestBulkRun(t *testing.T) {
	s, clk, _ := openTest(t)
	k := newKey(t)
	const n = 3*bulkMaxRows + 7
	var evts []*nostr.Event
	wantTags, expiring := 0, 0
	for i := range n {
		var tags nostr.Tags
		switch i % 4 {
		case 1:
			tags = nostr.Tags{{"expiration", fmt.Sprint(baseTime.Unix() + 50)}, {"t", "exp"}}
			wantTags++
			expiring++
		case 2:
			tags = nostr.Tags{{"t", "a"}, {"p", k.pk}, {"e", fmt.Sprintf("%064x", i)}}
			wantTags += 3
		}
		if i%3 == 0 { // a tag naming its event: each tag row must belong to the right one
			tags = append(tags, nostr.Tag{"x", fmt.Sprint("ev-", i)})
			wantTags++
		}
		if i == 5 {
			for j := range 2*bulkMaxRows + 3 {
				tags = append(tags, nostr.Tag{"t", fmt.Sprint("many-", j)})
			}
			wantTags += 2*bulkMaxRows + 3
		}
		evts = append(evts, ev(t, k, 1, int64(i), tags, fmt.Sprintf("bulk %d \"quoted\" ✓", i)))
	}
	// Event 5 again, in the second chunk: that chunk goes one by one, the
	// third goes back to bulk with the right seqs and tag rows.
	const dupAt = bulkMaxRows + 6
	sent := slices.Insert(slices.Clone(evts), dupAt, evts[5])
	before, _ := s.Stats(context.Background())
	errs := saveAsOneBatch(t, s, sent)
	for i, err := range errs {
		if want := error(nil); i == dupAt {
			if !errors.Is(err, ErrDuplicate) {
				t.Fatalf("the repeated event: %v, want ErrDuplicate", err)
			}
		} else if err != want {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	st, _ := s.Stats(context.Background())
	// The held job's transaction and the batch's: a batch transaction that
	// failed would have been retried one event per transaction.
	if c := st.Commits - before.Commits; c > 2 {
		t.Fatalf("%d commits, want 2: the batch did not go in as one transaction", c)
	}
	if st.Events != n || st.Tags != int64(wantTags) {
		t.Fatalf("stored %d events and %d tag rows, want %d and %d", st.Events, st.Tags, n, wantTags)
	}
	for i, e := range evts {
		got := query(t, s, nostr.Filter{IDs: []string{e.ID}}, Visibility{})
		if len(got) != 1 || got[0].Content != e.Content || got[0].CreatedAt != e.CreatedAt || !got[0].CheckID() {
			t.Fatalf("event %d did not come back intact: %v", i, got)
		}
		if i%3 == 0 {
			got := query(t, s, nostr.Filter{Tags: nostr.TagMap{"x": {fmt.Sprint("ev-", i)}}}, Visibility{})
			if len(got) != 1 || got[0].ID != e.ID {
				t.Fatalf("#x ev-%d finds %v, want event %d", i, ids(got), i)
			}
		}
	}
	if got := query(t, s, nostr.Filter{Tags: nostr.TagMap{"t": {"many-130"}}}, Visibility{}); len(got) != 1 || got[0].ID != evts[5].ID {
		t.Fatalf("#t many-130 finds %v, want event 5", got)
	}
	if got := query(t, s, nostr.Filter{Tags: nostr.TagMap{"e": {fmt.Sprintf("%064x", 6)}}}, Visibility{}); len(got) != 1 || got[0].ID != evts[6].ID {
		t.Fatalf("#e finds %v, want event 6", got)
	}
	// The seqs follow the batch order: newest-first order by created_at.
	all := query(t, s, nostr.Filter{Limit: n}, Visibility{})
	if len(all) != n || all[0].ID != evts[n-1].ID || all[n-1].ID != evts[0].ID {
		t.Fatalf("query of all: %d events, wrong order", len(all))
	}
	clk.Set(baseTime.Add(50 * time.Second))
	if swept, err := s.SweepExpired(context.Background()); err != nil || swept != int64(expiring) {
		t.Fatalf("SweepExpired = %d, %v; want %d (the expirations stored by bulk)", swept, err, expiring)
	}
}

// A long value list is bound as one JSON array: the SQL text, and so the
// statement cache, does not vary with its length, SQLite's limit on bound
// parameters does not apply, and the answer is the one Filter.Matches
// gives.
func TestLongValueLists(t *testing.T) {
	s, _, _ := openTest(t)
	ctx := context.Background()
	a, b := newKey(t), newKey(t)
	var mine []*nostr.Event
	for i := range 5 {
		e := ev(t, a, 1, int64(i), nostr.Tags{{"t", fmt.Sprint("v", i)}}, "a")
		mustSave(t, s, e)
		mine = append(mine, e)
		mustSave(t, s, ev(t, b, 1, int64(i), nil, "b"))
	}
	long := func(n int, first string) []string {
		out := []string{first}
		for i := 1; i < n; i++ {
			out = append(out, fmt.Sprintf("%064x", i))
		}
		return out
	}
	q1, _ := s.buildQuery(nostr.Filter{Authors: long(maxInlineValues+1, a.pk)}, Visibility{}, selectRows, true)
	q2, _ := s.buildQuery(nostr.Filter{Authors: long(maxInlineValues+500, a.pk)}, Visibility{}, selectRows, true)
	if q1.sql != q2.sql || len(q1.args) != len(q2.args) {
		t.Fatalf("the SQL varies with the list's length:\n%s\n%s", q1.sql, q2.sql)
	}
	for _, f := range []nostr.Filter{
		{Authors: long(40_000, a.pk)}, // beyond SQLite's limit on bound parameters
		{IDs: append(long(3000, mine[2].ID), mine[4].ID)},
		{Tags: nostr.TagMap{"t": append(long(100, "v1"), "v3")}},
		{Kinds: []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34}, Authors: []string{a.pk}},
	} {
		got, err := s.Query(ctx, f, Visibility{})
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, e := range mine {
			if f.Matches(e) {
				want = append(want, e.ID)
			}
		}
		var ids []string
		for _, e := range got {
			ids = append(ids, e.ID)
		}
		slices.Sort(ids)
		slices.Sort(want)
		if len(want) == 0 || !slices.Equal(ids, want) {
			t.Fatalf("%d-value filter: got %d events, want %d", len(f.Authors)+len(f.IDs)+len(f.Kinds), len(ids), len(want))
		}
		if n, err := s.Count(ctx, f, Visibility{}); err != nil || n != int64(len(want)) {
			t.Fatalf("count %d (%v), want %d", n, err, len(want))
		}
	}
	// An invalid UTF-8 value matches nothing, whatever the list's length
	// (in JSON it would become U+FFFD).
	fffd := ev(t, b, 1, 9, nostr.Tags{{"t", "bad\uFFFD"}}, "fffd")
	mustSave(t, s, fffd)
	for _, n := range []int{1, maxInlineValues + 1} {
		f := nostr.Filter{Tags: nostr.TagMap{"t": append([]string{"bad\xff"}, long(n, "v-none")[1:]...)}}
		if got, err := s.Query(ctx, f, Visibility{}); err != nil || len(got) != 0 {
			t.Fatalf("invalid UTF-8 in a list of %d: %d events (%v), want none", n, len(got), err)
		}
	}

	// The lookup of a few authors' kinds is one statement, cached once.
	if _, err := s.Query(ctx, nostr.Filter{Authors: []string{a.pk}}, Visibility{}); err != nil {
		t.Fatal(err)
	}
	cached := len(s.stmts)
	for n := range 20 {
		// written out (more arguments than are cached), and as JSON
		for _, size := range []int{maxCachedArgs + 1 + n, maxInlineValues + 1 + n} {
			if _, err := s.Query(ctx, nostr.Filter{Authors: long(size, a.pk)}, Visibility{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(s.stmts) != cached {
		t.Fatalf("statement cache grew from %d to %d with the length of a list", cached, len(s.stmts))
	}
}

// A filter with authors and no kinds first looks up the authors' kinds, one
// seek each, so that it can merge one arm per (author, kind) instead of
// sorting every event of the authors.
func TestAuthorsKinds(t *testing.T) {
	s, _, _ := openTest(t)
	ctx := context.Background()
	a, b, none := newKey(t), newKey(t), newKey(t)
	for i, kind := range []int{30023, 1, 7, 1, 0} {
		mustSave(t, s, ev(t, a, kind, int64(i), nostr.Tags{{"d", fmt.Sprint(i)}}, "a"))
	}
	mustSave(t, s, ev(t, b, 3, 1, nil, "b"))
	cases := []struct {
		authors []string
		max     int
		want    []int
	}{
		{[]string{a.pk}, 10, []int{0, 1, 7, 30023}},
		{[]string{a.pk, b.pk, a.pk, "not hex"}, 5, []int{0, 1, 7, 30023, 3}},
		{[]string{a.pk}, 4, []int{0, 1, 7, 30023}},
		{[]string{a.pk}, 3, nil}, // too many: the caller keeps the plain plan
		{[]string{a.pk, b.pk}, 4, nil},
		{[]string{none.pk}, 4, []int{}}, // no events: nothing can match
	}
	for _, c := range cases {
		got, err := s.authorsKinds(ctx, c.authors, c.max)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, c.want) || (got == nil) != (c.want == nil) {
			t.Errorf("authorsKinds(%d authors, max %d) = %v, want %v", len(c.authors), c.max, got, c.want)
		}
	}
	got := query(t, s, nostr.Filter{Authors: []string{a.pk, b.pk}, Limit: 3}, Visibility{})
	if len(got) != 3 || got[0].Kind != 0 || got[1].Kind != 1 || got[2].Kind != 7 {
		t.Fatalf("newest 3 of a and b: %v", got)
	}
}
