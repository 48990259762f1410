package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"time"

	"github.com/coder/websocket"
	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/storage"
)

const fillAuthors = 1000

// authorKey is deterministic, so a store filled by an earlier run can be reused.
func authorKey(i int) keypair {
	sum := sha256.Sum256([]byte(fmt.Sprintf("relaybench author %d", i)))
	sk := hex.EncodeToString(sum[:])
	pk, _ := nostr.GetPublicKey(sk)
	return keypair{sk, pk}
}

type fillInfo struct {
	authors []string
	ids     []string // a sample of stored ids
}

// fillKinds is the kind of stored event j: j%10 picks it, and keys[j%1000]
// signs it, so author i posts only kind fillKinds[i%10].
var fillKinds = []int{1, 1, 1, 1, 1, 1, 7, 7, 7, 1059}

// reactors are the authors whose only stored events are reactions (kind 7).
func (f *fillInfo) reactors() []string {
	var out []string
	for i, a := range f.authors {
		if fillKinds[i%len(fillKinds)] == 7 {
			out = append(out, a)
		}
	}
	return out
}

// fillStore makes sure the SQLite file at path holds n events from fillAuthors
// authors (kinds 1, 7 and 1059, each p-tagging one of the authors), written
// through the store's own writer.
func fillStore(ctx context.Context, path string, n int) (*fillInfo, error) {
	keys := make([]keypair, fillAuthors)
	info := &fillInfo{}
	for i := range keys {
		keys[i] = authorKey(i)
		info.authors = append(info.authors, keys[i].pk)
	}
	st, err := storage.Open(ctx, storage.Options{Path: path, Synchronous: "NORMAL", Logger: slog.New(slog.DiscardHandler), MaxBatch: 4096})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	stats, err := st.Stats(ctx)
	if err != nil {
		return nil, err
	}
	have := int(stats.Events)
	if have < n {
		fmt.Fprintf(os.Stderr, "  filling %s: %d events to sign and store...\n", path, n-have)
		base := time.Now().Add(-30 * 24 * time.Hour).Unix()
		start := time.Now()
		const chunk = 50_000
		for done := have; done < n; done += chunk {
			m := min(chunk, n-done)
			evts := signAll(m, func(i int) nostr.Event {
				j := done + i
				r := rand.New(rand.NewPCG(uint64(j), 7))
				kind := fillKinds[j%len(fillKinds)]
				tags := nostr.Tags{{"p", keys[r.IntN(fillAuthors)].pk}}
				if kind == 7 {
					tags = append(tags, nostr.Tag{"e", fmt.Sprintf("%064x", r.Uint64())})
				}
				return nostr.Event{Kind: kind, CreatedAt: nostr.Timestamp(base + int64(j)*2), Tags: tags,
					Content: fmt.Sprintf("stored event %d: some words to make it the size of a short note", j)}
			}, rotate(keys, done)...)
			errc := make(chan error, m)
			for i := range evts {
				st.SaveAsync(&evts[i], func(err error) { errc <- err })
			}
			for i := 0; i < m; i++ {
				if err := <-errc; err != nil {
					return nil, fmt.Errorf("fill: %w", err)
				}
			}
			fmt.Fprintf(os.Stderr, "  ... %d/%d (%.0f events/s incl. signing)\n", done+m, n, float64(done+m-have)/time.Since(start).Seconds())
		}
	}
	// Sample ids for the ids-filter queries.
	r := rand.New(rand.NewPCG(1, 2))
	for len(info.ids) < 10_000 {
		evts, err := st.Query(ctx, nostr.Filter{Authors: []string{info.authors[r.IntN(fillAuthors)]}, Limit: 50, Until: ptr(nostr.Timestamp(time.Now().Unix() - int64(r.IntN(30*24*3600))))}, storage.Visibility{})
		if err != nil {
			return nil, err
		}
		for _, e := range evts {
			info.ids = append(info.ids, e.ID)
		}
	}
	return info, nil
}

func ptr[T any](v T) *T { return &v }

// pick returns n distinct elements of from, chosen at random.
func pick(r *rand.Rand, from []string, n int) []string {
	out := make([]string, 0, n)
	for _, i := range r.Perm(len(from))[:n] {
		out = append(out, from[i])
	}
	return out
}

// rotate returns keys starting at offset, so event j is signed by keys[j % len].
func rotate(keys []keypair, offset int) []keypair {
	o := offset % len(keys)
	return append(append([]keypair{}, keys[o:]...), keys[:o]...)
}

type queryResult struct {
	name       string
	p50, p99   time.Duration
	avgResults float64
}

// queries runs REQs one after another on one connection and times each to EOSE.
func queries(ctx context.Context, url string, fill *fillInfo, n int) ([]queryResult, error) {
	ws, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	defer ws.CloseNow()
	ws.SetReadLimit(16 << 20)
	r := rand.New(rand.NewPCG(3, 4))
	shapes := []struct {
		name   string
		filter func() map[string]any
	}{
		{"authors+kinds limit 100", func() map[string]any {
			return map[string]any{"authors": []string{fill.authors[r.IntN(len(fill.authors))]}, "kinds": []int{1}, "limit": 100}
		}},
		{"#p limit 100", func() map[string]any {
			return map[string]any{"#p": []string{fill.authors[r.IntN(len(fill.authors))]}, "limit": 100}
		}},
		// Everything an author posted: a profile page, or a client syncing
		// its own events.
		{"author, any kind, limit 100", func() map[string]any {
			return map[string]any{"authors": []string{fill.authors[r.IntN(len(fill.authors))]}, "limit": 100}
		}},
		// A few authors' notes and reactions: six (author, kind) pairs.
		{"3 authors+2 kinds limit 100", func() map[string]any {
			return map[string]any{"authors": pick(r, fill.authors, 3), "kinds": []int{1, 7}, "limit": 100}
		}},
		// Notes of two authors who have none here (they post only
		// reactions): a client asking a personal relay for follows who
		// publish elsewhere. Nothing matches, so no walk may stop early.
		{"2 authors+kinds, nothing stored", func() map[string]any {
			return map[string]any{"authors": pick(r, fill.reactors(), 2), "kinds": []int{1}, "limit": 100}
		}},
		// A home feed: the authors a user follows. 20 authors and a kind are
		// more SQL arguments than the store caches a statement for, so
		// each of these REQs prepares its statement; over 256 authors, the
		// list is bound as one JSON array.
		{"follow list: 20 authors+kinds limit 100", func() map[string]any {
			return map[string]any{"authors": pick(r, fill.authors, 20), "kinds": []int{1}, "limit": 100}
		}},
		{"follow list: 500 authors+kinds limit 100", func() map[string]any {
			return map[string]any{"authors": pick(r, fill.authors, 500), "kinds": []int{1}, "limit": 100}
		}},
		{"ids (10 ids)", func() map[string]any {
			ids := make([]string, 10)
			for i := range ids {
				ids[i] = fill.ids[r.IntN(len(fill.ids))]
			}
			return map[string]any{"ids": ids}
		}},
	}
	// Skip the AUTH challenge the relay sends first.
	if _, _, err := ws.Read(ctx); err != nil {
		return nil, err
	}
	var out []queryResult
	for _, shape := range shapes {
		lat := make([]time.Duration, 0, n)
		results := 0
		for q := 0; q < n; q++ {
			sub := fmt.Sprintf("q%d", q)
			req, _ := json.Marshal([]any{"REQ", sub, shape.filter()})
			t0 := time.Now()
			if err := ws.Write(ctx, websocket.MessageText, req); err != nil {
				return nil, err
			}
			for {
				_, data, err := ws.Read(ctx)
				if err != nil {
					return nil, err
				}
				if len(data) > 8 && string(data[:8]) == `["EVENT"` {
					results++
					continue
				}
				if len(data) > 7 && string(data[:7]) == `["EOSE"` {
					break
				}
				return nil, fmt.Errorf("query %s: unexpected %s", shape.name, data)
			}
			lat = append(lat, time.Since(t0))
			close, _ := json.Marshal([]any{"CLOSE", sub})
			if err := ws.Write(ctx, websocket.MessageText, close); err != nil {
				return nil, err
			}
		}
		p50, p99 := percentiles(lat)
		out = append(out, queryResult{name: shape.name, p50: p50, p99: p99, avgResults: float64(results) / float64(n)})
	}
	return out, nil
}
