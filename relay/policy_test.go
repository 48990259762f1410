package relay_test

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/relay"
)

func TestPersonalRelayPolicy(t *testing.T) {
	friend, stranger := newKey(t), newKey(t)
	e := newEnv(t, func(cfg *relay.Config) { cfg.Allow = []string{friend.pk} })
	c := e.dial()
	c.mustPublish(e.event(e.owner, 1, "owner"))
	c.mustPublish(e.event(e.owner, 30023, "owner article", nostr.Tag{"d", "x"}))
	c.mustPublish(e.event(friend, 1, "allowlisted"))
	c.refused(e.event(stranger, 1, "spam"), "restricted:")
	c.refused(e.event(stranger, 0, `{"name":"squatter"}`), "restricted:")
	// The inbox: anyone may deliver a gift wrap to the owner or the allowlist...
	c.mustPublish(e.event(newKey(t), 1059, "mail", nostr.Tag{"p", e.owner.pk}))
	c.mustPublish(e.event(newKey(t), 1059, "mail", nostr.Tag{"p", friend.pk}))
	// ...but not to anybody else, and a seal is not a wrap.
	c.refused(e.event(newKey(t), 1059, "mail", nostr.Tag{"p", stranger.pk}), "restricted:")
	c.refused(e.event(stranger, 13, "seal", nostr.Tag{"p", e.owner.pk}), "restricted:")

	open := newEnv(t, func(cfg *relay.Config) { cfg.Open = true })
	oc := open.dial()
	oc.mustPublish(open.event(stranger, 1, "open relay"))
}

func TestRateLimits(t *testing.T) {
	t.Run("per IP", func(t *testing.T) {
		e := newEnv(t, func(cfg *relay.Config) {
			cfg.Limits.EventsPerSecondPerIP, cfg.Limits.EventBurstPerIP = 0.001, 3
		})
		c := e.dial()
		for i := 0; i < 3; i++ {
			c.mustPublish(e.event(e.owner, 1, "burst"))
		}
		c.refused(e.event(e.owner, 1, "one too many"), "rate-limited:")
		// Another connection from the same IP shares the bucket.
		e.dial().refused(e.event(e.owner, 1, "still too many"), "rate-limited:")
		e.clock.Add(time.Hour)
		c.mustPublish(e.event(e.owner, 1, "refilled"))
	})
	t.Run("per pubkey", func(t *testing.T) {
		e := newEnv(t, func(cfg *relay.Config) {
			cfg.Limits.EventsPerSecondPerPubkey, cfg.Limits.EventBurstPerPubkey = 0.001, 2
		})
		c := e.dial()
		sender := newKey(t)
		wrap := func() *nostr.Event { return e.event(sender, 1059, "mail", nostr.Tag{"p", e.owner.pk}) }
		c.mustPublish(wrap())
		c.mustPublish(wrap())
		c.refused(wrap(), "rate-limited:")
		c.mustPublish(e.event(newKey(t), 1059, "another sender", nostr.Tag{"p", e.owner.pk}))
		for i := 0; i < 5; i++ { // the owner is not limited per pubkey
			c.mustPublish(e.event(e.owner, 1, "owner"))
		}
	})
	t.Run("AUTH per IP", func(t *testing.T) {
		// An AUTH costs a signature check, as an EVENT does: it draws on the
		// same bucket, however often the same signed event is replayed.
		e := newEnv(t, func(cfg *relay.Config) {
			cfg.Limits.EventsPerSecondPerIP, cfg.Limits.EventBurstPerIP = 0.001, 2
		})
		c := e.dial()
		c.auth(e.owner)
		evt := &nostr.Event{Kind: 22242, CreatedAt: nostr.Now(), Tags: nostr.Tags{{"relay", c.url}, {"challenge", c.challenge}}}
		sign(t, evt, e.owner)
		c.send("AUTH", evt)
		if ok, msg := c.ok(evt.ID); !ok {
			t.Fatalf("second AUTH: %s", msg)
		}
		c.send("AUTH", evt)
		if ok, msg := c.ok(evt.ID); ok || !strings.HasPrefix(msg, "rate-limited:") {
			t.Fatalf("an AUTH past the burst: %v %q", ok, msg)
		}
		c.refused(e.event(e.owner, 1, "the bucket is empty"), "rate-limited:")
		// Nor does an AUTH naming another relay get its signature checked
		// (the owner's would be, for a warning) once the bucket is empty.
		foreign := &nostr.Event{Kind: 22242, CreatedAt: nostr.Now(), Tags: nostr.Tags{{"relay", "wss://elsewhere.example"}, {"challenge", c.challenge}}}
		sign(t, foreign, e.owner)
		c.send("AUTH", foreign)
		if ok, msg := c.ok(foreign.ID); ok || !strings.HasPrefix(msg, "rate-limited:") {
			t.Fatalf("an AUTH for another relay past the burst: %v %q", ok, msg)
		}
		e.clock.Add(time.Hour)
		evt = &nostr.Event{Kind: 22242, CreatedAt: nostr.Timestamp(e.clock.Now().Unix()), Tags: nostr.Tags{{"relay", c.url}, {"challenge", c.challenge}}}
		sign(t, evt, e.owner)
		c.send("AUTH", evt)
		if ok, msg := c.ok(evt.ID); !ok {
			t.Fatalf("AUTH after the bucket refilled: %s", msg)
		}
	})
	t.Run("REQ per IP", func(t *testing.T) {
		e := newEnv(t, func(cfg *relay.Config) { cfg.Limits.ReqsPerSecondPerIP, cfg.Limits.ReqBurstPerIP = 0.001, 2 })
		c := e.dial()
		c.req("a", map[string]any{})
		c.req("b", map[string]any{})
		if msg := c.closed("REQ", "c", map[string]any{}); !strings.HasPrefix(msg, "rate-limited:") {
			t.Fatalf("third REQ: %q", msg)
		}
	})
}

func TestCreatedAtLimits(t *testing.T) {
	e := newEnv(t, func(cfg *relay.Config) { cfg.Limits.MaxPastAge = time.Hour })
	c := e.dial()
	future := e.event(e.owner, 1, "from the future")
	future.CreatedAt += 3600
	sign(t, future, e.owner)
	c.refused(future, "invalid:")

	old := e.event(e.owner, 1, "too old")
	old.CreatedAt -= 2 * 3600
	sign(t, old, e.owner)
	c.refused(old, "invalid:")

	// NIP-59 back-dates gift wraps up to two days: accepted.
	k := newKey(t)
	wrap := e.event(k, 1059, "back-dated", nostr.Tag{"p", e.owner.pk})
	wrap.CreatedAt -= 2*24*3600 - 60
	sign(t, wrap, k)
	c.mustPublish(wrap)
}

func sign(t *testing.T, evt *nostr.Event, k keypair) {
	t.Helper()
	if err := evt.Sign(k.sk); err != nil {
		t.Fatal(err)
	}
}

// tryDial opens a websocket with an X-Forwarded-For header (none if xff is
// empty) and returns the HTTP status of a refusal, 0 if it was accepted.
func tryDial(t *testing.T, e *env, xff string) int {
	t.Helper()
	h := http.Header{}
	if xff != "" {
		h.Set("X-Forwarded-For", xff)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, e.url, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		if resp == nil {
			t.Fatalf("dial with X-Forwarded-For %q: %v", xff, err)
		}
		return resp.StatusCode
	}
	t.Cleanup(func() { ws.CloseNow() })
	return 0
}

func TestConnectionsPerIP(t *testing.T) {
	e := newEnv(t, func(cfg *relay.Config) { cfg.Limits.MaxConnectionsPerIP = 2 })
	// No trusted proxy: X-Forwarded-For is the client's own say, ignored.
	if s := tryDial(t, e, "203.0.113.1"); s != 0 {
		t.Fatalf("first connection refused: %d", s)
	}
	c := e.dial()
	if s := tryDial(t, e, "203.0.113.2"); s != http.StatusTooManyRequests {
		t.Fatalf("third connection from 127.0.0.1 (claiming another address): status %d, want 429", s)
	}
	// Closing one frees its place.
	c.ws.Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(5 * time.Second)
	for tryDial(t, e, "") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("a closed connection's place was not freed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTrustedProxy(t *testing.T) {
	e := newEnv(t, func(cfg *relay.Config) {
		cfg.Limits.MaxConnectionsPerIP = 1
		cfg.Limits.EventsPerSecondPerIP, cfg.Limits.EventBurstPerIP = 0.001, 1
		cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8")}
	})
	for _, c := range []struct {
		xff  string
		want int
		why  string
	}{
		{"203.0.113.1", 0, "a client through the proxy"},
		{"203.0.113.2", 0, "another client through the proxy"},
		{"198.51.100.9, 203.0.113.1", http.StatusTooManyRequests, "the first client again: the proxy appended its address; the client's own entry to the left is not believed"},
		{"203.0.113.3, 10.1.2.3", 0, "a client behind two proxies, both trusted"},
		{"203.0.113.3", http.StatusTooManyRequests, "that client again"},
		{"", 0, "the proxy itself, with no header"},
		{"not-an-address", http.StatusTooManyRequests, "a header that is not an address counts as the proxy"},
		{"::ffff:203.0.113.2", http.StatusTooManyRequests, "an IPv4-mapped IPv6 address is the IPv4 address"},
		{"2001:db8:1:2::1", 0, "an IPv6 client"},
		{"2001:db8:1:2:ffff::9", http.StatusTooManyRequests, "another address in the same /64: the same client"},
		{"2001:db8:1:3::1", 0, "the next /64"},
	} {
		if s := tryDial(t, e, c.xff); s != c.want {
			t.Fatalf("X-Forwarded-For %q (%s): status %d, want %d", c.xff, c.why, s, c.want)
		}
	}
	// The event buckets are per client too.
	e2 := newEnv(t, func(cfg *relay.Config) {
		cfg.Limits.EventsPerSecondPerIP, cfg.Limits.EventBurstPerIP = 0.001, 1
		cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	via := func(xff string) *client {
		return e2.dialOpts(&websocket.DialOptions{HTTPHeader: http.Header{"X-Forwarded-For": {xff}}})
	}
	a, b := via("203.0.113.1"), via("203.0.113.2")
	a.mustPublish(e2.event(e2.owner, 1, "from a"))
	b.mustPublish(e2.event(e2.owner, 1, "from b"))
	a.refused(e2.event(e2.owner, 1, "a again"), "rate-limited:")
}

// The connections Exempt picks (the node's own messenger) are not held to
// the per-IP limits, and do not use up anyone else's share of them.
func TestExemptFromPerIPLimits(t *testing.T) {
	e := newEnv(t, func(cfg *relay.Config) {
		cfg.Limits.MaxConnectionsPerIP = 1
		cfg.Limits.EventsPerSecondPerIP, cfg.Limits.EventBurstPerIP = 0.001, 1
		cfg.Limits.ReqsPerSecondPerIP, cfg.Limits.ReqBurstPerIP = 0.001, 1
	})
	e.relay.Exempt = func(req *http.Request) bool { return req.Header.Get("Test-Exempt") == "yes" }
	exempt := func() *client {
		return e.dialOpts(&websocket.DialOptions{HTTPHeader: http.Header{"Test-Exempt": {"yes"}}})
	}
	plain := e.dial()
	if s := tryDial(t, e, ""); s != http.StatusTooManyRequests {
		t.Fatalf("second plain connection: status %d, want 429", s)
	}
	a, b := exempt(), exempt()
	for i := range 3 {
		a.mustPublish(e.event(e.owner, 1, fmt.Sprint("exempt ", i)))
		// A filter the next events do not match: a live copy of one could
		// arrive before its OK, which mustPublish reads next.
		a.req(fmt.Sprint("q", i), map[string]any{"kinds": []int{9999}, "limit": 1})
	}
	// The plain connection still has its own burst of one EVENT and one REQ.
	plain.mustPublish(e.event(e.owner, 1, "plain"))
	plain.refused(e.event(e.owner, 1, "plain again"), "rate-limited:")
	plain.req("p", map[string]any{"limit": 1})
	if msg := plain.closed("REQ", "p2", map[string]any{}); !strings.HasPrefix(msg, "rate-limited:") {
		t.Fatalf("second plain REQ: %q", msg)
	}
	// Exempt connections leaving do not free a plain one's place.
	a.ws.Close(websocket.StatusNormalClosure, "")
	b.ws.Close(websocket.StatusNormalClosure, "")
	time.Sleep(100 * time.Millisecond)
	if s := tryDial(t, e, ""); s != http.StatusTooManyRequests {
		t.Fatalf("plain connection after the exempt ones left: status %d, want 429", s)
	}
}

// A client that vanished without closing (here: one that never reads, so
// it never answers a ping) is closed after two ping intervals of silence,
// and its place in the per-IP limit is freed; it used to keep it until a
// write to it timed out, which on an idle connection never happens. A
// client that is idle but alive answers the pings and is kept.
func TestSilentClientIsDropped(t *testing.T) {
	e := newEnv(t, func(cfg *relay.Config) {
		cfg.Limits.MaxConnectionsPerIP = 2
		cfg.PingInterval = 200 * time.Millisecond
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	live := e.dial()
	e.dialRaw(ctx) // never read
	if s := tryDial(t, e, ""); s != http.StatusTooManyRequests {
		t.Fatalf("a third connection: status %d, want 429", s)
	}
	start := time.Now()
	for tryDial(t, e, "") != 0 {
		if time.Since(start) > 5*time.Second {
			t.Fatal("the silent client's place was not freed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if time.Since(start) < 300*time.Millisecond {
		t.Fatalf("freed after %s, before two ping intervals", time.Since(start))
	}
	live.quiet(time.Second) // five intervals, idle
	if got := live.req("s", map[string]any{"kinds": []int{1}}); len(got) != 0 {
		t.Fatalf("the live client: %v", got)
	}
}
