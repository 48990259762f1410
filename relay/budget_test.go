package relay

import (
	"context"
	"testing"
	"time"
)

func TestBudget(t *testing.T) {
	ctx := context.Background()
	b := newBudget(100)
	if err := b.acquire(ctx, 60); err != nil {
		t.Fatal(err)
	}
	if err := b.acquire(ctx, 40); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	waiting := func(what string) {
		t.Helper()
		select {
		case err := <-got:
			t.Fatalf("%s: acquired (%v)", what, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Full: the next one waits for a release.
	go func() { got <- b.acquire(ctx, 30) }()
	waiting("past the budget")
	b.release(20)
	waiting("30 with 20 free")
	b.release(40)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	// A waiter gives up with its context.
	cctx, cancel := context.WithCancel(ctx)
	go func() { got <- b.acquire(cctx, 90) }()
	cancel()
	if err := <-got; err == nil {
		t.Fatal("acquire after cancel succeeded")
	}
	// More than the whole budget is granted once nothing else is held.
	b.release(30)
	b.release(40)
	if err := b.acquire(ctx, 500); err != nil {
		t.Fatal(err)
	}
	go func() { got <- b.acquire(ctx, 1) }()
	waiting("while an oversized one is held")
	b.release(500)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}
