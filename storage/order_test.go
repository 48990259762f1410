package storage

import (
	"context"
	"fmt"
	"slices"
	"testing"

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
