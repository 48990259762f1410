package hub

import (
	"context"
	"testing"
	"time"
)

func TestHub(t *testing.T) {
	h := New[int](2)
	ctx, cancel := context.WithCancel(context.Background())
	a := h.Watch(ctx)
	b := h.Watch(context.Background())
	if d := h.Publish(1); d != 0 {
		t.Fatalf("dropped %d with room for everyone", d)
	}
	h.Publish(2)
	if d := h.Publish(3); d != 2 { // both buffers (2) are full
		t.Fatalf("dropped %d, want 2", d)
	}
	if v := <-a; v != 1 {
		t.Fatalf("a got %d", v)
	}
	cancel() // a goes; its channel closes after what it holds
	deadline := time.After(time.Second)
	for open := true; open; {
		select {
		case _, open = <-a:
		case <-deadline:
			t.Fatal("a's channel not closed after its context ended")
		}
	}
	if d := h.Publish(4); d != 1 { // only b is left, and it is full
		t.Fatalf("dropped %d after a left, want 1", d)
	}
	h.Close()
	n := 0
	for range b {
		n++
	}
	if n != 2 {
		t.Fatalf("b drained %d values before closing, want 2", n)
	}
	if _, open := <-h.Watch(context.Background()); open {
		t.Fatal("Watch after Close returned an open channel")
	}
}
