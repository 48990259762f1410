package chat

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// TestInboxCatchUpReadsEveryPage: bob is offline while 1,150 wraps reach
// his relay, more than the relay answers one REQ with (500). After his
// restart every message is there. The wraps share four seconds (300, 500,
// 300 and 50 of them), so pages are cut in the middle of a second, and the
// second of 500 fills a page with wraps already read: a pager that skips
// below a page's oldest second, or stops at a page with nothing new, loses
// some.
func TestInboxCatchUpReadsEveryPage(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	bob := newUser(t, clk, "bob")
	bs := bob.start(t, nil)
	eventually(t, 10*time.Second, "bob's inbox to have subscribed (its cursor set)", func() (bool, error) {
		var n int
		err := bs.st.db.QueryRowContext(ctx, `SELECT count(*) FROM cursors`).Scan(&n)
		return n > 0, err
	})
	if err := bs.Close(); err != nil {
		t.Fatal(err)
	}

	alice := wrapper(t)
	now := clk.Now()
	total := 0
	for i, n := range []int{300, 500, 300, 50} {
		at := nostr.Timestamp(now.Add(-time.Duration(i+1) * time.Hour).Unix())
		alice.past = func(time.Time) nostr.Timestamp { return at }
		for j := range n {
			r := alice.NewRumor(KindChatMessage, fmt.Sprint("msg ", i, " ", j), nostr.Tags{{"p", bob.key.PublicKey()}}, now)
			w, err := alice.Wrap(r, bob.key.PublicKey(), 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := bob.relay.store.Save(ctx, &w); err != nil {
				t.Fatal(err)
			}
			total++
		}
	}

	bs2 := bob.start(t, nil)
	eventually(t, 30*time.Second, "every message sent while bob was offline", func() (bool, error) {
		var got int
		if err := bs2.st.db.QueryRowContext(ctx, `SELECT count(*) FROM messages`).Scan(&got); err != nil {
			return false, err
		}
		return got == total, fmt.Errorf("%d of %d", got, total)
	})
}

// TestWrapExpirationMakesMessageDisappear: NIP-17 puts a disappearing
// message's expiration on the gift wrap, so a rumor without one (as
// nostr-tools and other clients send) still disappears; with both, the
// earlier counts. Before, only the rumor's was stored and such a message
// was kept for good.
func TestWrapExpirationMakesMessageDisappear(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	bob := newUser(t, clk, "bob")
	bs := bob.start(t, nil)
	alice := wrapper(t)
	now := clk.Now()
	hour := now.Add(time.Hour).Unix()
	for _, c := range []struct {
		name           string
		rumorExp, want int64
	}{
		{"wrap only", 0, hour},
		{"rumor earlier", now.Add(30 * time.Minute).Unix(), now.Add(30 * time.Minute).Unix()},
		{"wrap earlier", now.Add(2 * time.Hour).Unix(), hour},
	} {
		tags := nostr.Tags{{"p", bob.key.PublicKey()}}
		if c.rumorExp > 0 {
			tags = append(tags, expirationTag(c.rumorExp))
		}
		r := alice.NewRumor(KindChatMessage, c.name, tags, now)
		w, err := alice.Wrap(r, bob.key.PublicKey(), hour) // on the seal and the wrap
		if err != nil {
			t.Fatal(err)
		}
		if err := bs.Ingest(ctx, &w); err != nil {
			t.Fatal(err)
		}
		m, err := bs.Message(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if m.ExpiresAt.Unix() != c.want {
			t.Errorf("%s: stored to expire at %v, want %d", c.name, m.ExpiresAt, c.want)
		}
	}
	clk.Add(2*time.Hour + time.Minute)
	if n, err := bs.PurgeExpired(ctx); err != nil || n != 3 {
		t.Fatalf("purged %d messages (%v), want 3", n, err)
	}
}
