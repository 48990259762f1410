package nostrclient

import (
	"context"
	"errors"
	"testing"

	"github.com/nbd-wtf/go-nostr"
)

// A Subscribe whose REQ is never written (its context already done) leaves
// nothing registered on the connection: each such call used to leave its
// subscription, with its 256-event buffer, in the connection's table for as
// long as the (shared, long-lived) connection lived.
func TestSubscribeThatNeverSentForgetsItself(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	c := &Conn{
		url: "ws://unwritten", ctx: ctx, cancel: cancel,
		oks: make(map[string][]chan okResult), subs: make(map[string]*Subscription),
		chalCh: make(chan struct{}), maxStored: DefaultMaxStoredEvents, maxStoredBytes: DefaultMaxStoredBytes,
	}
	done, stop := context.WithCancel(context.Background())
	stop()
	for range 3 {
		if _, err := c.Subscribe(done, nostr.Filter{Kinds: []int{1}}); !errors.Is(err, context.Canceled) {
			t.Fatalf("subscribe with a done context: %v", err)
		}
	}
	c.mu.Lock()
	n := len(c.subs)
	c.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d subscriptions left registered, want 0", n)
	}
}
