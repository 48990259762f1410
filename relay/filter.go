package relay

import (
	"cmp"
	"slices"
	"strings"

	"github.com/nbd-wtf/go-nostr"
)

// normalizeFilter sorts f's lists (ids, authors, kinds, each tag's values)
// and drops repeated values, in place, and returns how many values are left
// in all. Repeats cost memory for as long as a subscription is open and
// time for every live event, and mean nothing: a filter's lists are sets. A
// nil list stays nil and an empty one empty (nil matches anything, empty
// nothing).
func normalizeFilter(f *nostr.Filter) int {
	f.IDs = sortedSet(f.IDs)
	f.Authors = sortedSet(f.Authors)
	f.Kinds = sortedSet(f.Kinds)
	n := len(f.IDs) + len(f.Authors) + len(f.Kinds)
	if f.Tags != nil {
		// go-nostr's decoder keys the map with strings that point into the
		// frame it parsed: copied, so that an open subscription does not
		// keep the whole frame.
		tags := make(nostr.TagMap, len(f.Tags))
		for name, vals := range f.Tags {
			if vals != nil {
				vals = sortedSet(vals)
				n += len(vals)
			}
			tags[strings.Clone(name)] = vals
		}
		f.Tags = tags
	}
	return n
}

func sortedSet[T cmp.Ordered](s []T) []T {
	if len(s) < 2 {
		return s
	}
	slices.Sort(s)
	if set := slices.Compact(s); len(set) < len(s) {
		return slices.Clone(set) // not the parsed list's whole array
	}
	return s
}

// matchFilter is nostr.Filter.Matches for a filter whose lists are sorted
// (normalizeFilter): each list is searched, not scanned, so that a live
// event costs a subscription a few comparisons however long its lists.
func matchFilter(f *nostr.Filter, evt *nostr.Event) bool {
	if f.IDs != nil && !contains(f.IDs, evt.ID) ||
		f.Kinds != nil && !contains(f.Kinds, evt.Kind) ||
		f.Authors != nil && !contains(f.Authors, evt.PubKey) ||
		f.Since != nil && evt.CreatedAt < *f.Since ||
		f.Until != nil && evt.CreatedAt > *f.Until {
		return false
	}
	for name, vals := range f.Tags {
		if vals != nil && !hasTagIn(evt.Tags, name, vals) {
			return false
		}
	}
	return true
}

func contains[T cmp.Ordered](sorted []T, v T) bool {
	_, found := slices.BinarySearch(sorted, v)
	return found
}

// hasTagIn reports whether tags has a tag name whose value is in sorted.
func hasTagIn(tags nostr.Tags, name string, sorted []string) bool {
	for _, t := range tags {
		if len(t) >= 2 && t[0] == name && contains(sorted, t[1]) {
			return true
		}
	}
	return false
}
