package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	gws "github.com/gorilla/websocket"
	"github.com/nbd-wtf/go-nostr"
)

type fanoutResult struct {
	p50, p99         time.Duration
	missed, expected int
}

// fanout opens subs subscriptions (one connection each), publishes events at a
// steady pace, and measures from the publish to each subscription's receipt.
func fanout(ctx context.Context, url string, owner keypair, subs, events, rate int) (fanoutResult, error) {
	var (
		mu       sync.Mutex
		lat      = make([]time.Duration, 0, subs*events)
		got      int
		sentAt   = make([]time.Time, events)
		wg       sync.WaitGroup
		ready    sync.WaitGroup
		conns    []*gws.Conn
		deadline = time.Now().Add(time.Duration(events)*time.Second/time.Duration(max(rate, 1)) + 30*time.Second)
	)
	rctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	for s := 0; s < subs; s++ {
		// Subscribers use gorilla/websocket: a plain blocking read per message,
		// no helper goroutines, so 1,000 of them cost the shared CPUs little.
		ws, _, err := gws.DefaultDialer.DialContext(ctx, url, nil)
		if err != nil {
			return fanoutResult{}, fmt.Errorf("subscriber %d: %w", s, err)
		}
		_ = ws.SetReadDeadline(deadline)
		conns = append(conns, ws)
		req, _ := json.Marshal([]any{"REQ", "live", map[string]any{"kinds": []int{1}, "authors": []string{owner.pk}, "limit": 0}})
		if err := ws.WriteMessage(gws.TextMessage, req); err != nil {
			return fanoutResult{}, err
		}
		wg.Add(1)
		ready.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, events)
			eose := false
			for n := 0; n < events; {
				_, data, err := ws.ReadMessage()
				if err != nil {
					break
				}
				now := time.Now()
				if !eose && strings.HasPrefix(string(data), `["EOSE"`) {
					eose = true
					ready.Done()
					continue
				}
				if !strings.HasPrefix(string(data), `["EVENT"`) {
					continue
				}
				// The content is "fanout <i>"; find it without decoding the whole event.
				_, rest, ok := strings.Cut(string(data), `"content":"fanout `)
				if !ok {
					continue
				}
				num, _, _ := strings.Cut(rest, `"`)
				i, err := strconv.Atoi(num)
				if err != nil || i < 0 || i >= events {
					continue
				}
				mu.Lock()
				t0 := sentAt[i]
				mu.Unlock()
				local = append(local, now.Sub(t0))
				n++
			}
			if !eose {
				ready.Done()
			}
			mu.Lock()
			lat = append(lat, local...)
			got += len(local)
			mu.Unlock()
		}()
	}
	ready.Wait()

	evts := signAll(events, func(i int) nostr.Event {
		return nostr.Event{Kind: 1, Content: fmt.Sprintf("fanout %d", i), CreatedAt: nostr.Now(), Tags: nostr.Tags{}}
	}, owner)
	pub, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return fanoutResult{}, err
	}
	defer pub.CloseNow()
	go func() { // drain OKs
		for {
			if _, _, err := pub.Read(rctx); err != nil {
				return
			}
		}
	}()
	tick := time.NewTicker(time.Second / time.Duration(max(rate, 1)))
	defer tick.Stop()
	for i := range evts {
		<-tick.C
		frame, _ := json.Marshal([]any{"EVENT", evts[i]})
		mu.Lock()
		sentAt[i] = time.Now()
		mu.Unlock()
		if err := pub.Write(ctx, websocket.MessageText, frame); err != nil {
			return fanoutResult{}, err
		}
	}
	wg.Wait()
	for _, c := range conns {
		c.Close()
	}
	p50, p99 := percentiles(lat)
	return fanoutResult{p50: p50, p99: p99, expected: subs * events, missed: subs*events - got}, nil
}
