package relay_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
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
