package relay_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/relay"
)

// Close drops every connection, including those whose upgrade was still in
// flight when it began (they used to slip in after Close had gone through
// the connections and stay served), and returns once their handlers ended.
func TestCloseDropsEveryConnection(t *testing.T) {
	for round := range 10 {
		e := newEnv(t, nil)
		const n = 24
		conns := make([]*websocket.Conn, n)
		var wg sync.WaitGroup
		for i := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				ws, _, err := websocket.Dial(ctx, e.url, nil)
				if err != nil {
					t.Error(err)
					return
				}
				conns[i] = ws
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		// Some handlers are still between the upgrade and registering
		// their connection when Close begins.
		e.relay.Close()
		for i, ws := range conns {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			var err error
			for err == nil {
				_, _, err = ws.Read(ctx) // the AUTH challenge, then the close
			}
			expired := ctx.Err() != nil
			cancel()
			if expired {
				t.Fatalf("round %d: connection %d still open 5 s after Close (%v)", round, i, err)
			}
			if s := websocket.CloseStatus(err); s != websocket.StatusGoingAway {
				t.Fatalf("round %d: connection %d ended with %v, want going away", round, i, err)
			}
		}
		// A websocket asked for after Close is turned away.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if ws, _, err := websocket.Dial(ctx, e.url, nil); err == nil {
			ws.CloseNow()
			t.Fatalf("round %d: dial after Close succeeded", round)
		}
		cancel()
	}
}

// Close does not wait for a client that reads nothing: the relay's write to
// it is blocked, and the goodbye queued behind that write used to wait for
// the write timeout (30 s by default, so a node's shutdown did; here 10
// minutes). It gets a few seconds, then its socket is closed.
func TestCloseDoesNotWaitForAClientThatDoesNotRead(t *testing.T) {
	e := newEnv(t, func(cfg *relay.Config) { cfg.WriteTimeout = 10 * time.Minute })
	base := e.clock.Now().Unix() - 10_000
	pad := strings.Repeat("x", 120_000)
	evts := make([]*nostr.Event, 200) // 24 MB: more than the sockets buffer
	for i := range evts {
		evts[i] = &nostr.Event{Kind: 30023, Content: pad, Tags: nostr.Tags{{"d", fmt.Sprint(i)}}, CreatedAt: nostr.Timestamp(base + int64(i))}
		sign(t, evts[i], e.owner)
	}
	e.saveAll(evts)
	ctx := t.Context()
	ws := e.dialRaw(ctx) // and never read
	writeJSON(t, ctx, ws, "REQ", "s", map[string]any{"kinds": []int{30023}})
	// Time for the relay to fill the socket and block in a write (were it
	// not blocked yet, Close would return at once and the test pass).
	time.Sleep(time.Second)
	done := make(chan struct{})
	go func() {
		e.relay.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute): // the write timeout is 10 minutes
		t.Fatal("Close still waits for a client that does not read")
	}
}
