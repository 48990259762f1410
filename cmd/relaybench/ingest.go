package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	gws "github.com/gorilla/websocket"
	"github.com/nbd-wtf/go-nostr"
)

type ingestResult struct {
	n        int
	rate     float64
	p50, p99 time.Duration
}

// ingest publishes n pre-signed events over conns connections, each writing
// as fast as it can (pipelining) while a reader collects the OKs.
func ingest(ctx context.Context, url string, owner keypair, n, conns, window int) (ingestResult, error) {
	now := nostr.Now()
	evts := signAll(n, func(i int) nostr.Event {
		return nostr.Event{Kind: 1, Content: fmt.Sprintf("ingest benchmark event %d with a little text", i), CreatedAt: now,
			Tags: nostr.Tags{{"t", "bench"}, {"p", owner.pk}}}
	}, owner)
	frames := make([][]byte, n)
	for i := range evts {
		frames[i], _ = json.Marshal([]any{"EVENT", evts[i]})
	}

	type connState struct {
		ws     *gws.Conn
		sent   map[string]time.Time
		mu     sync.Mutex
		window chan struct{}
	}
	var (
		wg        sync.WaitGroup
		latMu     sync.Mutex
		latencies = make([]time.Duration, 0, n)
		accepted  int
		firstErr  error
	)
	states := make([]*connState, conns)
	for c := range states {
		// Publishers use gorilla/websocket (a plain write and read per
		// message), so the clients cost the shared CPUs as little as possible.
		ws, _, err := gws.DefaultDialer.DialContext(ctx, url, nil)
		if err != nil {
			return ingestResult{}, err
		}
		ws.SetReadLimit(1 << 20)
		states[c] = &connState{ws: ws, sent: make(map[string]time.Time, n/conns+1), window: make(chan struct{}, window)}
	}
	start := time.Now()
	for c, st := range states {
		var mine []int
		for i := c; i < n; i += conns {
			mine = append(mine, i)
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			for _, i := range mine {
				st.window <- struct{}{}
				st.mu.Lock()
				st.sent[evts[i].ID] = time.Now()
				st.mu.Unlock()
				if err := st.ws.WriteMessage(gws.TextMessage, frames[i]); err != nil {
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, len(mine))
			ok := 0
			for got := 0; got < len(mine); {
				_, data, err := st.ws.ReadMessage()
				if err != nil {
					latMu.Lock()
					firstErr = err
					latMu.Unlock()
					return
				}
				var msg []json.RawMessage
				if json.Unmarshal(data, &msg) != nil || len(msg) < 3 || string(msg[0]) != `"OK"` {
					continue
				}
				got++
				<-st.window
				var id string
				_ = json.Unmarshal(msg[1], &id)
				st.mu.Lock()
				t0 := st.sent[id]
				st.mu.Unlock()
				if string(msg[2]) == "true" {
					ok++
					local = append(local, time.Since(t0))
				}
			}
			latMu.Lock()
			latencies = append(latencies, local...)
			accepted += ok
			latMu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, st := range states {
		st.ws.Close()
	}
	if firstErr != nil {
		return ingestResult{}, fmt.Errorf("ingest: %w", firstErr)
	}
	if accepted != n {
		return ingestResult{}, fmt.Errorf("ingest: only %d of %d events accepted", accepted, n)
	}
	p50, p99 := percentiles(latencies)
	return ingestResult{n: accepted, rate: float64(accepted) / elapsed.Seconds(), p50: p50, p99: p99}, nil
}
