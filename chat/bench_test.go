package chat

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// go test -tags libsecp256k1 -run '^$' -bench 'Wrap|EndToEnd' -benchtime 2000x ./chat/

func BenchmarkWrap(b *testing.B) {
	alice, bob := wrapper(b), wrapper(b)
	rumor := alice.NewRumor(KindChatMessage, "a typical short chat message, about eighty bytes long, give or take", nostr.Tags{{"p", bob.PublicKey()}}, time.Now())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := alice.Wrap(rumor, bob.PublicKey(), 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnwrap(b *testing.B) {
	alice, bob := wrapper(b), wrapper(b)
	rumor := alice.NewRumor(KindChatMessage, "a typical short chat message, about eighty bytes long, give or take", nostr.Tags{{"p", bob.PublicKey()}}, time.Now())
	wraps := make([]nostr.Event, 256)
	for i := range wraps {
		wraps[i], _ = alice.Wrap(rumor, bob.PublicKey(), 0)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := bob.Unwrap(&wraps[i%len(wraps)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkEndToEnd: messages per second from one Service to another, each
// with its own relay on SQLite, over loopback websockets: Send (wrap twice,
// store, queue) → outbox → recipient's relay (verify, commit) → live
// subscription → unwrap → recipient's store.
func BenchmarkEndToEnd(b *testing.B) {
	ctx := context.Background()
	clk := &clock{}
	alice := newUser(b, clk, "alice")
	bob := newUser(b, clk, "bob")
	bob.publishDMRelays(b, bob.relay.url, bob.relay.url)
	as := alice.start(b, func(c *Config) { c.DiscoveryRelays = []string{bob.relay.url} })
	bs := bob.start(b, nil)
	to := []string{bob.key.PublicKey()}
	// Warm up: DM relay list cached, subscriptions open.
	m, err := as.Send(ctx, to, "warm-up", SendOptions{})
	if err != nil {
		b.Fatal(err)
	}
	eventually(b, 10*time.Second, "warm-up", func() (bool, error) {
		_, err := bs.Message(ctx, m.ID)
		return err == nil, err
	})
	watch := bs.Watch(ctx)
	done := make(chan int)
	go func() {
		got := 0
		timeout := time.After(time.Minute + time.Duration(b.N)*10*time.Millisecond)
		for got < b.N {
			select {
			case ev := <-watch:
				if ev.Type == EventMessage {
					got++
				}
			case <-timeout:
				done <- got
				return
			}
		}
		done <- got
	}()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if _, err := as.Send(ctx, to, fmt.Sprintf("message %d", i), SendOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	if got := <-done; got != b.N {
		b.Fatalf("received %d of %d", got, b.N)
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
}
