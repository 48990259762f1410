package storage

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// A limit that cuts through a group of events with the same created_at must
// return that group's lowest ids (NIP-01), whatever order they were stored in.
func TestLimitCutsTieGroupByLowestID(t *testing.T) {
	s, _, _ := openTest(t)
	a := newKey(t)
	var group []*nostr.Event
	for i := 0; i < 12; i++ {
		group = append(group, ev(t, a, 1, 100, nostr.Tags{{"t", "tie"}}, fmt.Sprint("tie ", i)))
	}
	// Store them highest id first, so index order is the opposite of the wanted order.
	slices.SortFunc(group, func(x, y *nostr.Event) int { return -cmpStr(x.ID, y.ID) })
	newer := ev(t, a, 1, 200, nostr.Tags{{"t", "tie"}}, "newer")
	older := ev(t, a, 1, 50, nostr.Tags{{"t", "tie"}}, "older")
	mustSave(t, s, append(append([]*nostr.Event{older}, group...), newer)...)

	byID := slices.Clone(group)
	slices.SortFunc(byID, func(x, y *nostr.Event) int { return cmpStr(x.ID, y.ID) })
	for _, f := range []nostr.Filter{
		{Limit: 4},
		{Limit: 4, Kinds: []int{1}},
		{Limit: 4, Authors: []string{a.pk}, Kinds: []int{1}},
		{Limit: 4, Tags: nostr.TagMap{"t": {"tie"}}},
	} {
		got, err := s.Query(context.Background(), f, Visibility{})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{newer.ID, byID[0].ID, byID[1].ID, byID[2].ID}
		if ids := idsOf(got); !slices.Equal(ids, want) {
			t.Fatalf("filter %v:\n got %v\nwant %v", f, ids, want)
		}
	}
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func idsOf(evts []*nostr.Event) []string {
	out := make([]string, len(evts))
	for i, e := range evts {
		out[i] = e.ID
	}
	return out
}

// Deleting an event by any path (replacement, NIP-09, expiry sweep) removes its tag rows.
func TestTagRowsFollowTheirEvents(t *testing.T) {
	s, clock, _ := openTest(t)
	a := newKey(t)
	now := clock.Now().Unix()
	keep := ev(t, a, 1, now, nostr.Tags{{"t", "keep"}, {"p", a.pk}, {"long-name", "not indexed"}}, "keep")
	gone := ev(t, a, 1, now, nostr.Tags{{"t", "gone"}, {"e", keep.ID}}, "gone")
	old := ev(t, a, 0, now-10, nostr.Tags{{"t", "old profile"}}, "{}")
	exp := ev(t, a, 1, now, nostr.Tags{{"t", "exp"}, {"expiration", fmt.Sprint(now + 5)}}, "exp")
	mustSave(t, s, keep, gone, old, exp)
	mustSave(t, s, ev(t, a, 0, now, nostr.Tags{{"t", "new profile"}}, "{}")) // replaces old
	del := ev(t, a, 5, now, nostr.Tags{{"e", gone.ID}}, "")
	mustSave(t, s, del)
	clock.Set(clock.Now().Add(10 * time.Second))
	if n, err := s.SweepExpired(context.Background()); err != nil || n != 1 {
		t.Fatalf("sweep: %d %v", n, err)
	}
	st, err := s.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// keep: t, p; new profile: t; deletion: e. Nothing of gone, old or exp.
	if st.Events != 3 || st.Tags != 4 {
		t.Fatalf("events %d tags %d, want 3 and 4", st.Events, st.Tags)
	}
}
