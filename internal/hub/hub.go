// Package hub fans values out to watchers. Each watcher gets a buffered
// channel; Publish never blocks: a watcher whose buffer is full loses the
// value. A watcher's channel closes when its context ends or the hub closes.
package hub

import (
	"context"
	"sync"
)

// Hub is a set of watchers of values of type T. The zero value is not
// usable: make one with New.
type Hub[T any] struct {
	buffer int

	mu     sync.Mutex
	subs   map[chan T]struct{}
	closed bool
}

// New returns a hub whose watchers buffer up to buffer values.
func New[T any](buffer int) *Hub[T] {
	return &Hub[T]{buffer: buffer, subs: make(map[chan T]struct{})}
}

// Watch returns a channel of the values published from now on, until ctx
// ends or the hub closes (then the channel is closed).
func (h *Hub[T]) Watch(ctx context.Context) <-chan T {
	ch := make(chan T, h.buffer)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		close(ch)
		return ch
	}
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	context.AfterFunc(ctx, func() { h.drop(ch) })
	return ch
}

func (h *Hub[T]) drop(ch chan T) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[ch]; ok {
		delete(h.subs, ch)
		close(ch)
	}
}

// Publish hands v to every watcher with room for it and returns how many
// watchers were too slow to take it.
func (h *Hub[T]) Publish(v T) (dropped int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- v:
		default:
			dropped++
		}
	}
	return dropped
}

// Close closes every watcher's channel; later Watch calls get a closed channel.
func (h *Hub[T]) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for ch := range h.subs {
		delete(h.subs, ch)
		close(ch)
	}
}
