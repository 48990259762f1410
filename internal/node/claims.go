package node

import (
	"context"
	"sync"

	"github.com/nbd-wtf/go-nostr"
)

// claimQueue carries the handle claims and revocations the relay stores to
// the anchor batcher, in order, on a goroutine of its own. The relay calls
// OnSaved from its dispatcher, which must not wait: the batcher's Submit
// waits for its lock, and an anchoring round holds that lock across btcd
// calls and publishing, and publishing goes through the dispatcher.
type claimQueue struct {
	submit func(ctx context.Context, evt *nostr.Event)

	mu      sync.Mutex
	pending []*nostr.Event
	wake    chan struct{}
}

func newClaimQueue(submit func(ctx context.Context, evt *nostr.Event)) *claimQueue {
	return &claimQueue{submit: submit, wake: make(chan struct{}, 1)}
}

// push queues evt and returns at once.
func (q *claimQueue) push(evt *nostr.Event) {
	q.mu.Lock()
	q.pending = append(q.pending, evt)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// run submits queued events until ctx is done, and returns how many it left
// unsubmitted.
func (q *claimQueue) run(ctx context.Context) int {
	for {
		select {
		case <-ctx.Done():
			q.mu.Lock()
			defer q.mu.Unlock()
			return len(q.pending)
		case <-q.wake:
		}
		for {
			q.mu.Lock()
			if len(q.pending) == 0 || ctx.Err() != nil {
				q.mu.Unlock()
				break
			}
			evt := q.pending[0]
			q.pending[0] = nil
			q.pending = q.pending[1:]
			q.mu.Unlock()
			q.submit(ctx, evt)
		}
	}
}
