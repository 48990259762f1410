package relay

import (
	"context"
	"sync"
)

// budget is a count of bytes that may be taken and given back, waiting for
// room: it bounds what a connection's reader holds parsed ahead of its
// handler.
type budget struct {
	mu    sync.Mutex
	size  int64
	avail int64
	freed chan struct{} // closed, and replaced, whenever bytes come back
}

func newBudget(size int64) *budget {
	return &budget{size: size, avail: size, freed: make(chan struct{})}
}

// acquire takes n bytes, waiting until they are free or ctx ends. More than
// the whole budget is granted when nothing else is held, so one large
// message is never stuck.
func (b *budget) acquire(ctx context.Context, n int64) error {
	for {
		b.mu.Lock()
		if n <= b.avail || b.avail == b.size {
			b.avail -= n
			b.mu.Unlock()
			return nil
		}
		freed := b.freed
		b.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// release gives back n bytes taken by acquire.
func (b *budget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.avail += n
	close(b.freed)
	b.freed = make(chan struct{})
	b.mu.Unlock()
}
