package storage

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/nbd-wtf/go-nostr"
)

// fuzzWorld is a small store plus the vocabulary fuzz inputs pick from.
type fuzzWorld struct {
	s       *Store
	all     []*nostr.Event // everything visible with no restrictions, newest first
	keys    []key
	kinds   []int
	names   []string
	values  []string
	private []int
}

func newFuzzWorld(t testing.TB) *fuzzWorld {
	s, clk, _ := openTest(t)
	w := &fuzzWorld{
		s:       s,
		keys:    []key{newKey(t), newKey(t), newKey(t)},
		kinds:   []int{1, 4, 7, 1059, 30023, 10002},
		names:   []string{"e", "p", "t", "d", "alt", "T"},
		values:  []string{"a", "b", "c", ""},
		private: []int{4, 1059},
	}
	for _, k := range w.keys {
		w.values = append(w.values, k.pk)
	}
	for i := 0; i < 80; i++ {
		k := w.keys[i%3]
		kind := w.kinds[(i*7)%len(w.kinds)]
		tags := nostr.Tags{}
		for j := 0; j < i%4; j++ {
			name := w.names[(i+j)%len(w.names)]
			val := w.values[(i*3+j)%len(w.values)]
			tags = append(tags, nostr.Tag{name, val})
		}
		if kind == 1059 {
			// Addressed to another key, as NIP-59 wraps are: readable by one reader.
			tags = append(tags, nostr.Tag{"p", w.keys[(i+1)%3].pk})
		}
		if i%11 == 0 {
			tags = append(tags, nostr.Tag{"expiration", fmt.Sprint(baseTime.Unix() + int64(i%3)*5 + 1)})
		}
		e := ev(t, k, kind, int64(i%13), tags, fmt.Sprint(i))
		_ = s.Save(context.Background(), e) // replaceable losers are fine
	}
	clk.Set(baseTime.Add(6e9)) // some expirations are now in the past
	all := query(t, s, nostr.Filter{Limit: 1000}, Visibility{})
	if len(all) < 40 {
		t.Fatalf("fuzz world too small: %d", len(all))
	}
	w.all = all
	return w
}

type byteReader struct {
	b []byte
	i int
}

func (r *byteReader) next() int {
	if r.i >= len(r.b) {
		return 0
	}
	r.i++
	return int(r.b[r.i-1])
}

func (w *fuzzWorld) filterFrom(data []byte) (nostr.Filter, Visibility) {
	r := &byteReader{b: data}
	var f nostr.Filter
	flags := r.next()
	pickStr := func(list func(i int) string, n int) []string {
		out := []string{}
		cnt := r.next() % 4
		for j := 0; j < cnt; j++ {
			x := r.next()
			switch {
			case x == 255:
				out = append(out, "zz-not-hex")
			default:
				out = append(out, list(x%n))
			}
		}
		return out
	}
	if flags&1 != 0 {
		f.IDs = pickStr(func(i int) string { return w.all[i].ID }, len(w.all))
	}
	if flags&2 != 0 {
		f.Authors = pickStr(func(i int) string { return w.keys[i].pk }, len(w.keys))
	}
	if flags&4 != 0 {
		f.Kinds = []int{}
		for j := r.next() % 4; j > 0; j-- {
			f.Kinds = append(f.Kinds, w.kinds[r.next()%len(w.kinds)])
		}
	}
	if flags&8 != 0 {
		f.Tags = nostr.TagMap{}
		for j := r.next() % 3; j > 0; j-- {
			name := w.names[r.next()%len(w.names)]
			if r.next()%5 == 0 {
				f.Tags[name] = nil
				continue
			}
			f.Tags[name] = pickStr(func(i int) string { return w.values[i] }, len(w.values))
		}
	}
	if flags&16 != 0 {
		f.Since = ts(int64(r.next() % 15))
	}
	if flags&32 != 0 {
		f.Until = ts(int64(r.next() % 15))
	}
	if flags&64 != 0 {
		f.Limit = r.next() % 20
	}
	if flags&128 != 0 {
		f.LimitZero = r.next()%4 == 0
	}
	var v Visibility
	vis := r.next()
	if vis&1 != 0 {
		v.PrivateKinds = w.private
		for j := 0; j < len(w.keys); j++ {
			if vis&(2<<j) != 0 {
				v.Readers = append(v.Readers, w.keys[j].pk)
			}
		}
	}
	if vis&16 != 0 {
		padLists(&f, &v, maxInlineValues+1+r.next()%8)
	}
	return f, v
}

// padLists lengthens every list of f and v by n values that match nothing,
// past maxInlineValues, so the query binds them as one JSON array.
func padLists(f *nostr.Filter, v *Visibility, n int) {
	hexPad := func(i int) string { return fmt.Sprintf("%064x", 0xfeed0000+i) }
	for i := range n {
		if f.IDs != nil {
			f.IDs = append(f.IDs, hexPad(i))
		}
		if f.Authors != nil {
			f.Authors = append(f.Authors, hexPad(i))
		}
		if f.Kinds != nil {
			f.Kinds = append(f.Kinds, 50000+i)
		}
		for name, vals := range f.Tags {
			if vals != nil {
				f.Tags[name] = append(vals, fmt.Sprint("pad-", i))
			}
		}
		if v.Readers != nil {
			v.Readers = append(v.Readers, hexPad(i))
		}
	}
}

// visible is the reference model of Query's rules, over w.all.
func visible(f nostr.Filter, v Visibility, e *nostr.Event) bool {
	for name, vals := range f.Tags {
		if vals != nil && len(name) != 1 {
			return false
		}
	}
	if !f.Matches(e) {
		return false
	}
	if slices.Contains(v.PrivateKinds, e.Kind) {
		for _, t := range e.Tags {
			if len(t) >= 2 && t[0] == "p" && slices.Contains(v.Readers, t[1]) {
				return true
			}
		}
		return false
	}
	return true
}

func FuzzQueryFilter(f *testing.F) {
	for _, seed := range [][]byte{
		{}, {0}, {1, 2, 3, 4}, {2, 1, 0}, {4, 2, 0, 3}, {8, 1, 2, 1, 3}, {8, 2, 0, 1, 1, 1, 1, 1, 2},
		{8 | 16 | 32, 1, 1, 1, 1, 2, 3, 9}, {255, 3, 1, 2, 3, 2, 0, 1, 3, 0, 1, 2, 2, 1, 0, 1, 2, 4, 5, 1, 7},
		{4 | 64, 2, 3, 1, 5, 1}, {4, 1, 3, 255}, {4, 1, 1, 7}, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3},
		{8, 1, 4, 2, 1, 6, 15}, {1, 255, 255, 255}, {128, 0}, {2 | 8, 1, 255, 1, 1, 1, 1, 1},
		// long lists (visibility byte 16): ids, authors, kinds, tags, readers
		{1 | 2 | 4 | 8, 2, 3, 7, 2, 0, 1, 2, 1, 4, 1, 2, 3, 1, 5, 2 | 4 | 8 | 16 | 1, 3},
		{1, 3, 0, 1, 2, 16}, {8, 1, 1, 1, 2, 4, 5, 1 | 2 | 16, 0}, {4, 2, 1, 3, 16, 1},
	} {
		f.Add(seed)
	}
	w := newFuzzWorld(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		flt, v := w.filterFrom(data)
		ctx := context.Background()
		got, err := w.s.Query(ctx, flt, v)
		if err != nil {
			t.Fatalf("Query(%v): %v", flt, err)
		}
		var want []*nostr.Event
		for _, e := range w.all {
			if visible(flt, v, e) {
				want = append(want, e)
			}
		}
		n, err := w.s.Count(ctx, flt, v)
		if err != nil {
			t.Fatalf("Count(%v): %v", flt, err)
		}
		if n != int64(len(want)) {
			t.Fatalf("Count(%v, %+v) = %d, want %d", flt, v, n, len(want))
		}
		for _, e := range got {
			if !flt.Matches(e) {
				t.Fatalf("Query(%v) returned non-matching %v", flt, e)
			}
		}
		switch {
		case flt.LimitZero:
			want = nil
		case flt.Limit > 0 && len(want) > flt.Limit:
			want = want[:flt.Limit]
		}
		if len(got) != len(want) {
			t.Fatalf("Query(%v, %+v): %d events, want %d", flt, v, len(got), len(want))
		}
		for i := range got {
			if got[i].ID != want[i].ID {
				t.Fatalf("Query(%v): event %d is %s, want %s (order)", flt, i, got[i].ID[:8], want[i].ID[:8])
			}
		}
		// Several filters in one COUNT (NIP-45): each matching event once.
		flt2, _ := w.filterFrom(data[len(data)/2:])
		nAny, err := w.s.CountAny(ctx, []nostr.Filter{flt, flt2}, v)
		if err != nil {
			t.Fatalf("CountAny: %v", err)
		}
		wantAny := 0
		for _, e := range w.all {
			if visible(flt, v, e) || visible(flt2, v, e) {
				wantAny++
			}
		}
		if nAny != int64(wantAny) {
			t.Fatalf("CountAny(%v, %v, %+v) = %d, want %d", flt, flt2, v, nAny, wantAny)
		}
		unlimited := flt
		unlimited.Limit, unlimited.LimitZero = 0, false
		all, err := w.s.Query(ctx, unlimited, v)
		if err != nil || int64(len(all)) != n {
			t.Fatalf("Count %d != len(Query without limit) %d (%v)", n, len(all), err)
		}
	})
}
