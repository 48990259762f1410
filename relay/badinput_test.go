package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/relay"
)

// Each bad input gets its NIP-01 prefix, and afterwards the same connection
// and another client are still served.
func TestBadInput(t *testing.T) {
	e := newEnv(t, func(cfg *relay.Config) {
		cfg.Limits.MaxMessageLength = 8 << 10
		cfg.Limits.MaxSubscriptions = 3
		cfg.Limits.MaxFilters = 2
		cfg.Limits.MaxFilterValues = 100
		cfg.Limits.MaxContentLength = 1000
	})
	c := e.dial()
	bystander := e.dial()
	bystander.req("watch", map[string]any{"kinds": []int{1}})

	served := 0
	stillServed := func(t *testing.T) {
		t.Helper()
		served++
		evt := e.event(e.owner, 1, fmt.Sprintf("still here %d", served))
		c.mustPublish(evt)
		bystander.expect("EVENT")
	}
	notice := func(t *testing.T, prefix string) {
		t.Helper()
		m := c.expect("NOTICE")
		if msg := str(t, m[1]); !strings.HasPrefix(msg, prefix) {
			t.Fatalf("NOTICE %q, want prefix %q", msg, prefix)
		}
	}

	t.Run("bad signature", func(t *testing.T) {
		evt := e.event(e.owner, 1, "forged")
		evt.Sig = strings.Repeat("ab", 64)
		c.refused(evt, "invalid:")
		stillServed(t)
	})
	t.Run("id mismatch", func(t *testing.T) {
		evt := e.event(e.owner, 1, "original")
		evt.Content = "tampered"
		c.refused(evt, "invalid:")
		stillServed(t)
	})
	t.Run("invalid UTF-8", func(t *testing.T) {
		evt := &nostr.Event{PubKey: e.owner.pk, CreatedAt: nostr.Now(), Kind: 1, Tags: nostr.Tags{}, Content: "caf\xe9 latin-1"}
		if err := evt.Sign(e.owner.sk); err != nil { // signed over the raw bytes, so only the UTF-8 rule refuses it
			t.Fatal(err)
		}
		c.sendRaw(fmt.Sprintf(`["EVENT",{"id":"%s","pubkey":"%s","created_at":%d,"kind":1,"tags":[],"content":"%s","sig":"%s"}]`,
			evt.ID, evt.PubKey, evt.CreatedAt, evt.Content, evt.Sig))
		if ok, msg := c.ok(evt.ID); ok || !strings.HasPrefix(msg, "invalid:") || !strings.Contains(msg, "UTF-8") {
			t.Fatalf("ok=%v %q", ok, msg)
		}
		stillServed(t)
	})
	t.Run("content too long", func(t *testing.T) {
		c.refused(e.event(e.owner, 1, strings.Repeat("a", 1001)), "invalid: content too long")
		// The limit counts characters, as NIP-11 says: 1,000 two-byte
		// characters are within it.
		c.mustPublish(e.event(e.owner, 1, strings.Repeat("é", 1000)))
		c.refused(e.event(e.owner, 1, strings.Repeat("é", 1001)), "invalid: content too long")
		stillServed(t)
	})
	t.Run("missing field", func(t *testing.T) {
		evt := e.event(e.owner, 1, "x")
		b, _ := json.Marshal(evt)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		delete(m, "sig")
		c.send("EVENT", m)
		if ok, msg := c.ok(evt.ID); ok || !strings.HasPrefix(msg, "invalid:") {
			t.Fatalf("ok=%v %q", ok, msg)
		}
		stillServed(t)
	})
	t.Run("malformed JSON", func(t *testing.T) {
		c.sendRaw(`["EVENT", {"id": `)
		notice(t, "invalid:")
		c.sendRaw(`not json at all`)
		notice(t, "invalid:")
		c.sendRaw(`{"EVENT": 1}`)
		notice(t, "invalid:")
		stillServed(t)
	})
	t.Run("unknown verb", func(t *testing.T) {
		c.send("HELLO", "world")
		notice(t, "invalid:")
		stillServed(t)
	})
	t.Run("frame over the size limit", func(t *testing.T) {
		evt := e.event(e.owner, 1, strings.Repeat("x", 20<<10))
		c.refused(evt, "invalid:") // an OK for its id, found in the frame's head
		c.sendRaw(`["REQ","big",` + strings.Repeat(`{},`, 5000) + `{}]`)
		notice(t, "invalid:")
		stillServed(t)
	})
	t.Run("too many subscriptions", func(t *testing.T) {
		for i := 0; i < 3; i++ {
			c.req(fmt.Sprintf("sub%d", i), map[string]any{"kinds": []int{9999}})
		}
		if msg := c.closed("REQ", "sub3", map[string]any{}); !strings.HasPrefix(msg, "blocked:") {
			t.Fatalf("fourth subscription: %q", msg)
		}
		c.req("sub0", map[string]any{"kinds": []int{9998}}) // replacing one is fine
		for i := 0; i < 3; i++ {
			c.send("CLOSE", fmt.Sprintf("sub%d", i))
		}
		stillServed(t)
	})
	t.Run("too many filters", func(t *testing.T) {
		if msg := c.closed("REQ", "many", map[string]any{}, map[string]any{}, map[string]any{}); !strings.HasPrefix(msg, "invalid:") {
			t.Fatalf("three filters: %q", msg)
		}
		stillServed(t)
	})
	t.Run("too many filter values", func(t *testing.T) {
		kinds := func(from, n int) []int {
			ks := make([]int, n)
			for i := range ks {
				ks[i] = from + i
			}
			return ks
		}
		// 101 values: 99 kinds, an author and a tag value, over two filters.
		over := []any{map[string]any{"kinds": kinds(100, 99)}, map[string]any{"authors": []string{e.owner.pk}, "#t": []string{"x"}}}
		for _, verb := range []string{"REQ", "COUNT"} {
			if msg := c.closed(verb, "values", over...); !strings.HasPrefix(msg, "invalid:") || !strings.Contains(msg, "101 values") {
				t.Fatalf("%s of 101 values: %q", verb, msg)
			}
		}
		// A repeated value counts once: 3,000 copies of one kind, 99 more.
		repeats := kinds(100, 99)
		for range 3000 {
			repeats = append(repeats, 1)
		}
		c.req("first", map[string]any{"kinds": repeats})
		// The open subscriptions list 100 values in all: one more is refused
		// until one is closed.
		if msg := c.closed("REQ", "second", map[string]any{"#t": []string{"y"}}); !strings.HasPrefix(msg, "blocked:") || !strings.Contains(msg, "101 values") {
			t.Fatalf("a second subscription past the connection's values: %q", msg)
		}
		c.req("first", map[string]any{"kinds": []int{1}}) // replacing: its old values no longer count
		c.req("second", map[string]any{"#t": []string{"y"}})
		c.send("CLOSE", "first")
		c.send("CLOSE", "second")
		stillServed(t)
	})
	t.Run("subscription id in characters", func(t *testing.T) {
		long := strings.Repeat("é", 64) // 128 bytes: NIP-01 counts 64 characters
		c.req(long, map[string]any{"kinds": []int{9997}})
		c.send("CLOSE", long)
		if msg := c.closed("REQ", long+"e", map[string]any{}); !strings.HasPrefix(msg, "invalid:") {
			t.Fatalf("a 65-character subscription id: %q", msg)
		}
		// A COUNT's id is held to the same limit (it was echoed back at any length).
		if msg := c.closed("COUNT", long+"e", map[string]any{}); !strings.HasPrefix(msg, "invalid:") {
			t.Fatalf("a COUNT with a 65-character id: %q", msg)
		}
		stillServed(t)
	})
	t.Run("bad filter", func(t *testing.T) {
		if msg := c.closed("REQ", "bad", map[string]any{"kinds": "one"}); !strings.HasPrefix(msg, "invalid:") {
			t.Fatalf("bad filter: %q", msg)
		}
		if msg := c.closed("REQ", "bad2", map[string]any{"authors": []string{"npub1notahexkey"}}); !strings.HasPrefix(msg, "invalid:") {
			t.Fatalf("bad author: %q", msg)
		}
		// Only single-letter tags are indexed: a longer name would match live
		// events but never stored ones.
		for _, name := range []string{"#topic", "#"} {
			if msg := c.closed("REQ", "bad3", map[string]any{name: []string{"x"}}); !strings.HasPrefix(msg, "invalid:") || !strings.Contains(msg, "single-letter") {
				t.Fatalf("filter on %s: %q", name, msg)
			}
		}
		stillServed(t)
	})
	// A REQ or COUNT with no filter is closed under its id, so the client
	// stops waiting for its EOSE or answer (it got a NOTICE, which names
	// no subscription).
	t.Run("no filter", func(t *testing.T) {
		for _, verb := range []string{"REQ", "COUNT"} {
			if msg := c.closed(verb, "none"); !strings.HasPrefix(msg, "invalid:") || !strings.Contains(msg, "filter") {
				t.Fatalf("%s without a filter: %q", verb, msg)
			}
		}
		stillServed(t)
	})
	t.Run("created_at far in the future", func(t *testing.T) {
		evt := &nostr.Event{Kind: 1, Content: "later", CreatedAt: nostr.Timestamp(e.clock.Now().Unix() + 86400), Tags: nostr.Tags{}}
		sign(t, evt, e.owner)
		c.refused(evt, "invalid:")
		stillServed(t)
	})
	t.Run("binary frame", func(t *testing.T) {
		c.sendBinary([]byte(`["REQ","x",{}]`))
		notice(t, "invalid:")
		stillServed(t)
	})
}

// An AUTH event whose pubkey or signature hex is too long is refused with
// invalid:, and the connection is served on (go-nostr's CheckSignature
// would index past its fixed-size arrays on these).
func TestAuthWithOverlongHex(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial()
	for _, mutate := range []func(*nostr.Event){
		func(evt *nostr.Event) { evt.PubKey = strings.Repeat("ab", 33) },
		func(evt *nostr.Event) { evt.Sig = strings.Repeat("cd", 65) },
	} {
		evt := &nostr.Event{Kind: 22242, CreatedAt: nostr.Now(), Tags: nostr.Tags{{"relay", c.url}, {"challenge", c.challenge}}}
		if err := evt.Sign(e.owner.sk); err != nil {
			t.Fatal(err)
		}
		mutate(evt)
		evt.ID = evt.GetID()
		c.send("AUTH", evt)
		msg := c.next()
		if len(msg) < 3 || str(t, msg[0]) != "OK" || string(msg[2]) != "false" {
			t.Fatalf("over-long AUTH: %s", joinRaw(msg))
		}
		if reason := str(t, msg[3]); !strings.HasPrefix(reason, "invalid:") {
			t.Fatalf("over-long AUTH refused with %q", reason)
		}
	}
	c.auth(e.owner) // the same connection still authenticates
}

// Open subscriptions cost the relay little memory, however large the frames
// that opened them: a list is kept without repeats, and nothing keeps a
// frame. 4 connections × 32 subscriptions, each opened by a 256 KiB frame
// of a repeated kind or tag value (once 35–55 MiB per connection), are set
// against the same subscriptions opened by small frames.
func TestSubscriptionsHoldNoFrames(t *testing.T) {
	e := newEnv(t, nil)
	const conns, subs = 4, 32
	frame := func(sub, list, value string, size int) string {
		var b strings.Builder
		b.WriteString(`["REQ","` + sub + `",{"` + list + `":[` + value)
		for b.Len() < size {
			b.WriteString("," + value)
		}
		b.WriteString("]}]")
		return b.String()
	}
	for _, list := range []struct{ name, value string }{{"kinds", "2"}, {"#x", `""`}} {
		grew := func(size int) int64 {
			before := heapInUse()
			var cs []*client
			for range conns {
				c := e.dial()
				cs = append(cs, c)
				for s := range subs {
					c.sendRaw(frame(fmt.Sprint("s", s), list.name, list.value, size))
					c.expect("EOSE")
				}
			}
			after := heapInUse()
			runtime.KeepAlive(cs) // open through the measure
			return after - before
		}
		small := grew(0)
		big := grew(256<<10 - 64)
		if per := (big - small) / conns; per > 1<<20 {
			t.Errorf("%s: a connection's %d subscriptions opened by 256 KiB frames hold %.1f MiB more than the same opened by small ones",
				list.name, subs, float64(per)/(1<<20))
		}
	}
}

// A client that asks for large stored events and does not read them holds
// a bounded part of them in the relay's memory: the handler stops queueing
// at a few MiB, not at thousands of copies (once 380 MiB here). 32 REQs for
// 200 events of 120 KB each; what the relay may hold is one REQ's results
// (24 MB) and the queue.
func TestSlowReaderHoldsLittle(t *testing.T) {
	e := newEnv(t, nil)
	base := e.clock.Now().Unix() - 10_000
	const stored = 200
	pad := strings.Repeat("x", 120_000)
	evts := make([]*nostr.Event, stored)
	for i := range evts {
		evts[i] = &nostr.Event{Kind: 30023, Content: pad, Tags: nostr.Tags{{"d", fmt.Sprint(i)}}, CreatedAt: nostr.Timestamp(base + int64(i))}
		sign(t, evts[i], e.owner)
	}
	e.saveAll(evts)
	before := heapInUse()
	ctx := t.Context()
	ws := e.dialRaw(ctx) // and never read
	for s := range 32 {
		writeJSON(t, ctx, ws, "REQ", fmt.Sprint("s", s), map[string]any{"kinds": []int{30023}})
	}
	// Until the relay stops growing: for a second within 1 MiB.
	const bound = 48 << 20
	last, still := before, 0
	for still < 5 {
		time.Sleep(200 * time.Millisecond)
		now := heapInUse()
		if now-before > bound {
			t.Fatalf("one connection that does not read holds %d MiB", (now-before)>>20)
		}
		if now-last < 1<<20 {
			still++
		} else {
			still = 0
		}
		last = now
	}
	t.Logf("one connection that does not read: %d MiB", (last-before)>>20)
}

// A subscriber that stops reading while large live events keep coming is
// dropped as too slow once 16 MiB wait for it, however few frames that is
// (the frame bound alone, 4096, is 480 MB of these events), and a reading
// subscriber gets them all.
func TestSlowLiveReaderIsDropped(t *testing.T) {
	// This client reads nothing until all 400 events are published, which
	// under -race on a loaded machine took longer than the default write
	// timeout: the relay then gave up on the write instead (no close frame).
	// The bound on what may pile up is what is tested here.
	e := newEnv(t, func(cfg *relay.Config) { cfg.WriteTimeout = 10 * time.Minute })
	ctx := t.Context()
	ws := e.dialRaw(ctx)
	writeJSON(t, ctx, ws, "REQ", "live", map[string]any{"kinds": []int{30023}, "limit": 0})
	reader := e.dial()
	reader.req("live", map[string]any{"kinds": []int{30023}, "limit": 0})
	// 48 MB: more than the loopback sockets buffer and the 16 MiB.
	const n = 400
	pad := strings.Repeat("x", 120_000)
	pub := e.dial()
	for i := range n {
		pub.mustPublish(e.event(e.owner, 30023, pad, nostr.Tag{"d", fmt.Sprint(i)}))
	}
	for range n {
		reader.expect("EVENT")
	}
	got := 0
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
				t.Fatalf("after %d events: %v, want a close for being too slow", got, err)
			}
			t.Logf("dropped after reading %d of %d events: %v", got, n, err)
			return
		}
		if strings.HasPrefix(string(data), `["EVENT"`) {
			got++
		}
		if got == n {
			t.Fatalf("a subscriber that stopped reading was sent all %d events (48 MB) and never dropped", n)
		}
	}
}

// An operator may allow events larger than the bytes a slow client may let
// pile up: a subscriber with nothing else waiting still gets one.
func TestLiveEventLargerThanTheQueueBound(t *testing.T) {
	e := newEnv(t, func(cfg *relay.Config) {
		cfg.Limits.MaxMessageLength = 24 << 20
		cfg.Limits.MaxContentLength = 20 << 20
	})
	sub := e.dial()
	sub.req("live", map[string]any{"kinds": []int{1}, "limit": 0})
	big := e.event(e.owner, 1, strings.Repeat("x", 17<<20))
	e.dial().mustPublish(big)
	m := sub.expect("EVENT")
	if !strings.Contains(string(m[2]), big.ID) {
		t.Fatalf("got %.100s, want the 17 MiB event", m[2])
	}
}

// A refusal quotes no broken UTF-8: the parser's errors may quote a piece
// of the frame, cut at a byte count, and an OK carrying half a character
// is a text frame that a websocket client must fail the connection on
// (RFC 6455, 8.1), browsers among them. Here a repeated "kind" holds a
// string whose quoted piece ends inside "é".
func TestRefusalsAreValidUTF8(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws := e.dialRaw(ctx)
	if _, _, err := ws.Read(ctx); err != nil { // the AUTH challenge
		t.Fatal(err)
	}
	for _, verb := range []string{"EVENT", "AUTH"} {
		evt := e.event(e.owner, 1, "x")
		f := fmt.Sprintf(`[%q,{"id":%q,"pubkey":%q,"created_at":%d,"kind":1,"tags":[],"content":"x","sig":%q,"kind":"aééééééé"}]`,
			verb, evt.ID, evt.PubKey, evt.CreatedAt, evt.Sig)
		if err := ws.Write(ctx, websocket.MessageText, []byte(f)); err != nil {
			t.Fatal(err)
		}
		_, data, err := ws.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !utf8.Valid(data) {
			t.Fatalf("%s refused in a frame that is not UTF-8: %q", verb, data)
		}
		var m []any
		if err := json.Unmarshal(data, &m); err != nil || len(m) != 4 || m[0] != "OK" || m[1] != evt.ID || m[2] != false || !strings.HasPrefix(m[3].(string), "invalid:") {
			t.Fatalf("%s: got %s", verb, data)
		}
	}
	good := e.event(e.owner, 1, "still served")
	writeJSON(t, ctx, ws, "EVENT", good)
	if _, data, err := ws.Read(ctx); err != nil || !strings.HasPrefix(string(data), `["OK","`+good.ID+`",true`) {
		t.Fatalf("after the refusals: %q %v", data, err)
	}
}
