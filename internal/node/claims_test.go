package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// The relay's dispatcher hands claims over without waiting, even while the
// batcher cannot take them (an anchoring round holds its lock across btcd
// calls); they reach it later, in order.
func TestClaimQueueNeverBlocksTheDispatcher(t *testing.T) {
	release := make(chan struct{})
	got := make(chan string, 100)
	q := newClaimQueue(func(ctx context.Context, evt *nostr.Event) {
		<-release // the batcher's lock, held by a round waiting on btcd
		got <- evt.ID
	})
	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan int, 1)
	go func() { left <- q.run(ctx) }()

	pushed := make(chan struct{})
	go func() {
		for i := range 50 {
			q.push(&nostr.Event{ID: fmt.Sprint(i)})
		}
		close(pushed)
	}()
	select {
	case <-pushed:
	case <-time.After(5 * time.Second):
		t.Fatal("push waited for the batcher")
	}
	close(release)
	for i := range 50 {
		select {
		case id := <-got:
			if id != fmt.Sprint(i) {
				t.Fatalf("claim %s submitted in place %d: out of order", id, i)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of 50 claims submitted", i)
		}
	}
	cancel()
	if n := <-left; n != 0 {
		t.Fatalf("%d claims left unsubmitted", n)
	}
}

// When the node stops, the queue's goroutine ends and says how many claims it
// did not hand over.
func TestClaimQueueStops(t *testing.T) {
	entered := make(chan struct{}, 3)
	q := newClaimQueue(func(ctx context.Context, evt *nostr.Event) {
		entered <- struct{}{}
		<-ctx.Done() // the batcher is busy until the node stops
	})
	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan int, 1)
	go func() { left <- q.run(ctx) }()
	for i := range 3 {
		q.push(&nostr.Event{ID: fmt.Sprint(i)})
	}
	<-entered // the first is being submitted
	cancel()
	select {
	case n := <-left:
		if n != 2 {
			t.Fatalf("%d claims reported left, want 2", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the queue did not stop with the node")
	}
}
