package relay_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/relay"
	"github.com/anchorchat/anchorchat/storage"
)

func TestPublishAndQueryFilters(t *testing.T) {
	other := newKey(t)
	e := newEnv(t, func(cfg *relay.Config) { cfg.Allow = []string{other.pk} })
	c := e.dial()

	var evs []*nostr.Event
	for i := 0; i < 6; i++ {
		k := e.owner
		if i%2 == 1 {
			k = other
		}
		evt := e.event(k, 1+i%2, "note "+strconv.Itoa(i), nostr.Tag{"t", "topic" + strconv.Itoa(i%3)}, nostr.Tag{"p", other.pk})
		evt.CreatedAt = nostr.Timestamp(1_700_000_000 + i*10)
		if err := evt.Sign(k.sk); err != nil {
			t.Fatal(err)
		}
		c.mustPublish(evt)
		evs = append(evs, evt)
	}
	newestFirst := func(xs ...*nostr.Event) []string {
		out := ids(xs...)
		slices.Reverse(out)
		return out
	}
	cases := []struct {
		name   string
		filter map[string]any
		want   []string
	}{
		{"all newest first", map[string]any{}, newestFirst(evs...)},
		{"ids", map[string]any{"ids": []string{evs[1].ID, evs[4].ID}}, newestFirst(evs[1], evs[4])},
		{"authors", map[string]any{"authors": []string{other.pk}}, newestFirst(evs[1], evs[3], evs[5])},
		{"kinds", map[string]any{"kinds": []int{1}}, newestFirst(evs[0], evs[2], evs[4])},
		{"author and kind", map[string]any{"authors": []string{e.owner.pk}, "kinds": []int{2}}, nil},
		{"tag", map[string]any{"#t": []string{"topic1"}}, newestFirst(evs[1], evs[4])},
		{"two tag values", map[string]any{"#t": []string{"topic1", "topic2"}}, newestFirst(evs[1], evs[2], evs[4], evs[5])},
		{"two tag names", map[string]any{"#t": []string{"topic0"}, "#p": []string{other.pk}}, newestFirst(evs[0], evs[3])},
		{"since inclusive", map[string]any{"since": 1_700_000_040}, newestFirst(evs[4], evs[5])},
		{"until inclusive", map[string]any{"until": 1_700_000_010}, newestFirst(evs[0], evs[1])},
		{"limit keeps newest", map[string]any{"limit": 2}, newestFirst(evs[4], evs[5])},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := c.req("s"+strconv.Itoa(i), tc.filter)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v\nwant %v", got, tc.want)
			}
			c.send("CLOSE", "s"+strconv.Itoa(i))
		})
	}

	t.Run("limit 0 gives only EOSE, then live events", func(t *testing.T) {
		if got := c.req("live", map[string]any{"limit": 0, "kinds": []int{1}}); len(got) != 0 {
			t.Fatalf("limit 0 returned %v", got)
		}
		fresh := e.event(e.owner, 1, "fresh")
		c.send("EVENT", fresh)
		// The live event and the OK may arrive in either order.
		var gotEvent, gotOK bool
		for !gotEvent || !gotOK {
			m := c.next()
			switch str(t, m[0]) {
			case "EVENT":
				if str(t, m[1]) != "live" {
					t.Fatalf("event for wrong subscription %s", m[1])
				}
				gotEvent = true
			case "OK":
				gotOK = true
			}
		}
	})
	t.Run("several filters are OR'ed without duplicates", func(t *testing.T) {
		got := c.req("or", map[string]any{"ids": []string{evs[0].ID}}, map[string]any{"authors": []string{e.owner.pk}, "until": 1_700_000_000})
		if !slices.Equal(got, []string{evs[0].ID}) {
			t.Fatalf("got %v", got)
		}
	})
	t.Run("CLOSE stops live delivery", func(t *testing.T) {
		c.send("CLOSE", "live")
		c.mustPublish(e.event(e.owner, 1, "after close"))
		c.quiet(200 * time.Millisecond)
	})
}

func TestCount(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial()
	for i := 0; i < 5; i++ {
		c.mustPublish(e.event(e.owner, 1, strconv.Itoa(i)))
	}
	c.mustPublish(e.event(e.owner, 7, "+"))
	c.send("COUNT", "c1", map[string]any{"kinds": []int{1}})
	m := c.expect("COUNT")
	var res struct {
		Count       int64 `json:"count"`
		Approximate bool  `json:"approximate"`
	}
	if err := json.Unmarshal(m[2], &res); err != nil || res.Count != 5 || res.Approximate {
		t.Fatalf("COUNT = %s (%v)", m[2], err)
	}
	c.send("COUNT", "c2", map[string]any{"kinds": []int{1}}, map[string]any{"kinds": []int{7}})
	m = c.expect("COUNT")
	if err := json.Unmarshal(m[2], &res); err != nil || res.Count != 6 {
		t.Fatalf("COUNT of two filters = %s", m[2])
	}
	// Overlapping filters count each event once, exactly.
	c.send("COUNT", "c3", map[string]any{"kinds": []int{1}}, map[string]any{"authors": []string{e.owner.pk}},
		map[string]any{"kinds": []int{7}, "limit": 0}, map[string]any{"#x": []string{"none"}})
	m = c.expect("COUNT")
	res = struct {
		Count       int64 `json:"count"`
		Approximate bool  `json:"approximate"`
	}{}
	if err := json.Unmarshal(m[2], &res); err != nil || res.Count != 6 || res.Approximate {
		t.Fatalf("COUNT of overlapping filters = %s, want 6, exact", m[2])
	}
}

func TestNIP11(t *testing.T) {
	e := newEnv(t, func(cfg *relay.Config) {
		cfg.Limits.MaxFilters = 7
		cfg.Limits.MaxFilterValues = 321
		cfg.Limits.EventsPerSecondPerIP, cfg.Limits.EventBurstPerIP = 11, 12
		cfg.Limits.EventsPerSecondPerPubkey, cfg.Limits.EventBurstPerPubkey = 13, 14
		cfg.Limits.ReqsPerSecondPerIP, cfg.Limits.ReqBurstPerIP = 15, 16
	})
	req, _ := http.NewRequest("GET", e.srv.URL, nil)
	req.Header.Set("Accept", "application/nostr+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/nostr+json" {
		t.Fatalf("content type %q", ct)
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatal("no CORS header")
	}
	var doc struct {
		SupportedNIPs []int          `json:"supported_nips"`
		PubKey        string         `json:"pubkey"`
		Limitation    map[string]any `json:"limitation"`
		Anchorchat    map[string]any `json:"anchorchat"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	for _, nip := range []int{1, 9, 11, 40, 42, 45, 59, 70} {
		if !slices.Contains(doc.SupportedNIPs, nip) {
			t.Errorf("supported_nips lacks %d: %v", nip, doc.SupportedNIPs)
		}
	}
	if doc.PubKey != e.owner.pk {
		t.Errorf("pubkey %q", doc.PubKey)
	}
	want := map[string]float64{"max_message_length": 256 << 10, "max_subscriptions": 32, "max_filters": 7, "max_limit": 1000,
		"max_subid_length": 64, "created_at_upper_limit": 900}
	for k, v := range want {
		if doc.Limitation[k] != v {
			t.Errorf("limitation.%s = %v, want %v (%s)", k, doc.Limitation[k], v, body)
		}
	}
	if doc.Limitation["restricted_writes"] != true {
		t.Errorf("restricted_writes = %v", doc.Limitation["restricted_writes"])
	}
	extra := map[string]float64{"events_per_second_per_ip": 11, "event_burst_per_ip": 12,
		"events_per_second_per_pubkey": 13, "event_burst_per_pubkey": 14,
		"reqs_per_second_per_ip": 15, "req_burst_per_ip": 16, "gift_wrap_backdate_seconds": 2 * 24 * 3600,
		"max_filter_values": 321}
	for k, v := range extra {
		if doc.Anchorchat[k] != v {
			t.Errorf("anchorchat.%s = %v, want %v", k, doc.Anchorchat[k], v)
		}
	}
}

func TestReplaceableAddressableEphemeral(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial()
	old := e.event(e.owner, 0, `{"name":"old"}`)
	c.mustPublish(old)
	e.clock.Add(time.Second)
	newer := e.event(e.owner, 0, `{"name":"new"}`)
	c.mustPublish(newer)
	if got := c.req("p", map[string]any{"kinds": []int{0}}); !slices.Equal(got, []string{newer.ID}) {
		t.Fatalf("replaceable: got %v, want only the newer", got)
	}
	if ok, msg := c.publish(old); !ok || msg == "" {
		t.Fatalf("republishing the older replaceable: ok=%v %q (want ok with a duplicate: note)", ok, msg)
	}

	a1 := e.event(e.owner, 30023, "v1", nostr.Tag{"d", "post"})
	b1 := e.event(e.owner, 30023, "other", nostr.Tag{"d", "other"})
	c.mustPublish(a1)
	c.mustPublish(b1)
	e.clock.Add(time.Second)
	a2 := e.event(e.owner, 30023, "v2", nostr.Tag{"d", "post"})
	c.mustPublish(a2)
	got := c.req("a", map[string]any{"kinds": []int{30023}})
	slices.Sort(got)
	want := []string{a2.ID, b1.ID}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("addressable: got %v, want %v", got, want)
	}

	// Ephemeral: delivered live, never stored.
	listener := e.dial()
	listener.req("eph", map[string]any{"kinds": []int{20001}})
	eph := e.event(e.owner, 20001, "now only")
	c.mustPublish(eph)
	m := listener.expect("EVENT")
	var evt nostr.Event
	if err := json.Unmarshal(m[2], &evt); err != nil || evt.ID != eph.ID {
		t.Fatalf("live ephemeral: %s", joinRaw(m))
	}
	if got := c.req("eph2", map[string]any{"kinds": []int{20001}}); len(got) != 0 {
		t.Fatalf("ephemeral event was stored: %v", got)
	}
}

func TestDeletion(t *testing.T) {
	friend := newKey(t)
	e := newEnv(t, func(cfg *relay.Config) { cfg.Allow = []string{friend.pk} })
	c := e.dial()
	mine := e.event(e.owner, 1, "regret")
	theirs := e.event(friend, 1, "not yours to delete")
	c.mustPublish(mine)
	c.mustPublish(theirs)

	// A gift wrap for the owner, from a throwaway key: its recipient may delete it (NIP-59).
	wrapKey := newKey(t)
	wrap := e.event(wrapKey, 1059, "ciphertext", nostr.Tag{"p", e.owner.pk})
	c.mustPublish(wrap)

	del := e.event(e.owner, 5, "", nostr.Tag{"e", mine.ID}, nostr.Tag{"e", theirs.ID}, nostr.Tag{"e", wrap.ID})
	c.mustPublish(del)
	c.auth(e.owner)
	got := c.req("q", map[string]any{"ids": []string{mine.ID, theirs.ID, wrap.ID, del.ID}})
	slices.Sort(got)
	want := []string{theirs.ID, del.ID}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("after deletion got %v, want %v (the owner's note and the wrap gone, the friend's kept)", got, want)
	}
	// A deleted event cannot come back.
	c.refused(mine, "blocked:")
}

func TestExpiration(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial()
	now := e.clock.Now().Unix()
	c.refused(e.event(e.owner, 1, "stale", nostr.Tag{"expiration", strconv.FormatInt(now-1, 10)}), "invalid:")

	soon := e.event(e.owner, 1, "soon gone", nostr.Tag{"expiration", strconv.FormatInt(now+60, 10)})
	keep := e.event(e.owner, 1, "stays")
	c.mustPublish(soon)
	c.mustPublish(keep)
	if got := c.req("before", map[string]any{"kinds": []int{1}}); len(got) != 2 {
		t.Fatalf("before expiry: %v", got)
	}
	e.clock.Add(61 * time.Second)
	if got := c.req("after", map[string]any{"kinds": []int{1}}); !slices.Equal(got, []string{keep.ID}) {
		t.Fatalf("after expiry: got %v, want only %s", got, keep.ID)
	}
	n, err := e.store.SweepExpired(t.Context())
	if err != nil || n != 1 {
		t.Fatalf("sweep removed %d (%v), want 1", n, err)
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial()
	k := newKey(t)
	sign := func(tags nostr.Tags, at nostr.Timestamp) *nostr.Event {
		evt := &nostr.Event{Kind: 22242, CreatedAt: at, Tags: tags}
		if err := evt.Sign(k.sk); err != nil {
			t.Fatal(err)
		}
		return evt
	}
	now := nostr.Now()
	bad := []struct {
		name string
		evt  *nostr.Event
	}{
		{"wrong challenge", sign(nostr.Tags{{"relay", c.url}, {"challenge", "nope"}}, now)},
		{"wrong relay", sign(nostr.Tags{{"relay", "wss://elsewhere.example/"}, {"challenge", c.challenge}}, now)},
		{"stale", sign(nostr.Tags{{"relay", c.url}, {"challenge", c.challenge}}, now-3600)},
	}
	for _, b := range bad {
		c.send("AUTH", b.evt)
		if ok, msg := c.ok(b.evt.ID); ok || msg[:8] != "invalid:" {
			t.Errorf("%s: ok=%v %q", b.name, ok, msg)
		}
	}
	forged := sign(nostr.Tags{{"relay", c.url}, {"challenge", c.challenge}}, now)
	last := "0"
	if forged.Sig[127] == '0' {
		last = "1"
	}
	forged.Sig = forged.Sig[:127] + last
	c.send("AUTH", forged)
	if ok, _ := c.ok(forged.ID); ok {
		t.Error("AUTH with a bad signature was accepted")
	}
	c.auth(k)
}

// A relay the user authenticates to could pass our challenge on and replay
// the AUTH signed for its own URL, sending its own name as Host: the relay
// tag must name this relay as configured or as actually reached, never the
// Host header. With relay.url and aliases set, those URLs (default ports or
// none alike) and the local address work.
func TestAuthRelayTag(t *testing.T) {
	k := newKey(t)
	authAs := func(c *client, relayURL string) (bool, string) {
		evt := &nostr.Event{Kind: 22242, CreatedAt: nostr.Now(), Tags: nostr.Tags{{"relay", relayURL}, {"challenge", c.challenge}}}
		if err := evt.Sign(k.sk); err != nil {
			t.Fatal(err)
		}
		c.send("AUTH", evt)
		return c.ok(evt.ID)
	}

	e := newEnv(t, nil)
	c := e.dialOpts(&websocket.DialOptions{Host: "evil.example"})
	if ok, msg := authAs(c, "wss://evil.example"); ok || !strings.HasPrefix(msg, "invalid:") {
		t.Fatalf("AUTH naming the Host header's relay: ok=%v %q", ok, msg)
	}
	port := e.url[strings.LastIndex(e.url, ":"):]
	for _, u := range []string{e.url, "ws://localhost" + port + "/", "wss://127.0.0.1" + port} {
		c := e.dialOpts(&websocket.DialOptions{Host: "evil.example"})
		if ok, msg := authAs(c, u); !ok {
			t.Fatalf("AUTH naming %s, the address reached: %q", u, msg)
		}
	}

	e = newEnv(t, func(cfg *relay.Config) {
		cfg.URL = "wss://relay.example:443/chat"
		cfg.Aliases = []string{"ws://abcdef.onion"}
	})
	for u, want := range map[string]bool{
		"wss://relay.example/chat": true, "ws://relay.example/chat/": true, "wss://relay.example:443/chat": true, e.url: true,
		"ws://abcdef.onion/": true, "ws://abcdef.onion:80": true,
		"wss://relay.example/": false, "wss://other.example/chat": false, "wss://relay.example:8443/chat": false, "ws://other.onion": false,
	} {
		c := e.dial()
		if ok, msg := authAs(c, u); ok != want {
			t.Errorf("relay.url set, AUTH naming %s: ok=%v %q", u, ok, msg)
		}
	}
}

func TestProtectedEvents(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial()
	prot := e.event(e.owner, 1, "only from me", nostr.Tag{"-"})
	c.send("EVENT", prot)
	var refused bool
	for !refused {
		m := c.next()
		if str(t, m[0]) == "OK" {
			ok, msg := false, str(t, m[3])
			_ = json.Unmarshal(m[2], &ok)
			if ok || msg[:14] != "auth-required:" {
				t.Fatalf("unauthenticated protected event: ok=%v %q", ok, msg)
			}
			refused = true
		}
	}
	c.auth(e.owner)
	c.mustPublish(prot)
}

// An event acknowledged before a REQ is sent comes back from the REQ's query
// and never a second time as a live event: the relay publishes each event to
// the dispatcher before its OK, and a subscription ignores broadcasts published
// before it was registered. Each REQ follows an OK at once, while the
// dispatcher may still be behind.
func TestAcknowledgedEventNotRepeatedLive(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial()
	for i := range 30 {
		evt := e.event(e.owner, 1, fmt.Sprintf("round %d", i))
		c.mustPublish(evt)
		sub := fmt.Sprintf("r%d", i)
		got := c.req(sub, map[string]any{"ids": []string{evt.ID}})
		if len(got) != 1 || got[0] != evt.ID {
			t.Fatalf("round %d: REQ by id gave %v", i, got)
		}
		c.send("CLOSE", sub)
	}
	// A live copy for any of those subscriptions would arrive now (CLOSE
	// races with it, so check the frames that made it through).
	deadline := time.After(300 * time.Millisecond)
	for {
		select {
		case m, ok := <-c.msgs:
			if !ok {
				t.Fatal("connection closed")
			}
			if str(t, m[0]) == "EVENT" {
				t.Fatalf("event repeated live after EOSE: %s", joinRaw(m))
			}
		case <-deadline:
			return
		}
	}
}

// A live event and the same event returned by a REQ are the same bytes, even
// for content a generic JSON encoder would escape differently.
func TestLiveAndStoredFramesIdentical(t *testing.T) {
	e := newEnv(t, nil)
	watcher, c := e.dial(), e.dial()
	watcher.req("live", map[string]any{"kinds": []int{1}})
	evt := e.event(e.owner, 1, "<b>&amp;</b> \"quoted\" \\ tab\t ctl \x01\x1f\x7f ünï ✓ \u2028\u2029")
	c.mustPublish(evt)
	live := watcher.expect("EVENT")
	watcher.send("REQ", "stored", map[string]any{"ids": []string{evt.ID}})
	stored := watcher.expect("EVENT")
	if str(t, stored[1]) != "stored" {
		t.Fatalf("unexpected frame for %s", stored[1])
	}
	if !bytes.Equal(live[2], stored[2]) {
		t.Fatalf("live and stored JSON differ:\n live   %s\n stored %s", live[2], stored[2])
	}
	watcher.expect("EOSE")
}

// NIP-01 does not forbid fields beyond its seven, and some clients send
// them: the event is accepted, and stored and served without them (its id
// covers none of them). A known field that is missing or mistyped is still
// refused, whatever else the object carries.
func TestEventWithExtraFields(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial()
	evt := e.event(e.owner, 1, "extra fields")
	var obj map[string]any
	b, _ := json.Marshal(evt)
	if err := json.Unmarshal(b, &obj); err != nil {
		t.Fatal(err)
	}
	obj["relays"] = []string{"wss://relay.example"}
	obj["meta"] = map[string]any{"a": []any{1, map[string]any{"b": nil}}, "s": "x"}
	obj["n"] = 1.5
	c.send("EVENT", obj)
	if ok, msg := c.ok(evt.ID); !ok {
		t.Fatalf("event with extra fields refused: %s", msg)
	}
	c.send("REQ", "s", map[string]any{"ids": []string{evt.ID}})
	got := c.expect("EVENT")
	c.expect("EOSE")
	if want := storage.EncodeEvent(evt); !bytes.Equal(got[2], want) {
		t.Fatalf("served\n %s\nwant\n %s", got[2], want)
	}

	delete(obj, "sig")
	c.send("EVENT", obj)
	if ok, msg := c.ok(evt.ID); ok || !strings.HasPrefix(msg, "invalid:") {
		t.Fatalf("event without sig, with extra fields: ok=%v %q", ok, msg)
	}
	c.mustPublish(e.event(e.owner, 1, "and the connection still serves"))
}

// A connection may authenticate as at most relay.MaxAuthKeys keys (each
// costs the dispatcher a check per private event).
func TestAuthKeysBounded(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial()
	var keys []keypair
	for range relay.MaxAuthKeys {
		k := newKey(t)
		keys = append(keys, k)
		c.auth(k)
	}
	one := func(k keypair) (bool, string) {
		evt := &nostr.Event{Kind: 22242, CreatedAt: nostr.Now(), Tags: nostr.Tags{{"relay", c.url}, {"challenge", c.challenge}}}
		if err := evt.Sign(k.sk); err != nil {
			t.Fatal(err)
		}
		c.send("AUTH", evt)
		return c.ok(evt.ID)
	}
	if ok, msg := one(newKey(t)); ok || !strings.HasPrefix(msg, "restricted:") {
		t.Fatalf("AUTH as key %d: ok=%v %q", relay.MaxAuthKeys+1, ok, msg)
	}
	c.auth(keys[3]) // again as a key it has: fine
	// Still served, as each of its keys.
	wrap := e.event(newKey(t), 1059, "sealed", nostr.Tag{"p", e.owner.pk}, nostr.Tag{"p", keys[relay.MaxAuthKeys-1].pk})
	e.dial().mustPublish(wrap)
	if got := c.req("w", map[string]any{"kinds": []int{1059}}); !slices.Equal(got, []string{wrap.ID}) {
		t.Fatalf("wrap to the last key authenticated: %v", got)
	}

}

// A REQ refused under the id of an open subscription ends that
// subscription: CLOSED means nothing more arrives under the id. A refused
// COUNT of the same id leaves the REQ alone.
func TestRefusedReqClosesTheSubscriptionItReplaces(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial()
	pub := e.dial()
	c.req("s", map[string]any{"kinds": []int{1}})
	c.req("t", map[string]any{"kinds": []int{1}})
	c.req("u", map[string]any{"kinds": []int{1}})
	if msg := c.closed("REQ", "s", map[string]any{"kinds": []int{1059}}); !strings.HasPrefix(msg, "auth-required:") {
		t.Fatalf("REQ s for wraps: %q", msg)
	}
	if msg := c.closed("REQ", "t", map[string]any{"kinds": "one"}); !strings.HasPrefix(msg, "invalid:") {
		t.Fatalf("REQ t with a bad filter: %q", msg)
	}
	if msg := c.closed("COUNT", "u", map[string]any{"kinds": []int{1059}}); !strings.HasPrefix(msg, "auth-required:") {
		t.Fatalf("COUNT u for wraps: %q", msg)
	}
	note := e.event(e.owner, 1, "after CLOSED")
	pub.mustPublish(note)
	m := c.expect("EVENT")
	if sub := str(t, m[1]); sub != "u" {
		t.Fatalf("event under %q after its CLOSED", sub)
	}
	c.quiet(300 * time.Millisecond)
	// The connection serves on, and the ids are free again.
	if got := c.req("s", map[string]any{"kinds": []int{1}}); !slices.Equal(got, []string{note.ID}) {
		t.Fatalf("REQ s again: %v", got)
	}
}

// A REQ within the published limits can return more events than a
// connection's queue holds. Its results wait for room, but they leave room
// for the frames that cannot wait: a live event arriving meanwhile reaches
// the client, which is not dropped as too slow for having paused to read.
func TestBigREQLeavesRoomForLiveEvents(t *testing.T) {
	e := newEnv(t, nil)
	base := e.clock.Now().Unix() - 100_000
	const stored = 6000
	pad := strings.Repeat("x", 8000) // 48 MB in all: more than the sockets buffer
	evts := make([]*nostr.Event, stored)
	for i := range evts {
		evts[i] = &nostr.Event{Kind: 1, Content: pad, Tags: nostr.Tags{}, CreatedAt: nostr.Timestamp(base + int64(i))}
		sign(t, evts[i], e.owner)
	}
	e.saveAll(evts)

	ctx := t.Context()
	ws := e.dialRaw(ctx)
	writeJSON(t, ctx, ws, "REQ", "live", map[string]any{"kinds": []int{1}, "limit": 0})
	var filters []any
	for i := range stored / 1000 { // max_limit 1000 per filter
		filters = append(filters, map[string]any{"kinds": []int{1}, "since": base + int64(i*1000), "until": base + int64(i*1000+999), "limit": 1000})
	}
	writeJSON(t, ctx, ws, append([]any{"REQ", "big"}, filters...)...)
	// The client pauses; meanwhile the REQ fills the queue, and a note is published.
	time.Sleep(time.Second)
	note := e.event(e.owner, 1, "published while the results were queued")
	e.dial().mustPublish(note)
	time.Sleep(200 * time.Millisecond)

	got, live := 0, 0
	eose := false
	for !eose || live == 0 {
		_, data, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("dropped after %d of %d stored events and %d live: %v", got, stored, live, err)
		}
		var m []json.RawMessage
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		switch str(t, m[0]) + " " + str(t, m[1]) {
		case "EVENT big":
			got++
		case "EVENT live":
			live++
			if !strings.Contains(string(m[2]), note.ID) {
				t.Fatalf("live event %s, want the note", m[2])
			}
		case "EOSE big":
			eose = true
		case "EOSE live":
		default:
			if str(t, m[0]) == "AUTH" {
				continue
			}
			t.Fatalf("unexpected %s", data)
		}
	}
	if got != stored || live != 1 {
		t.Fatalf("%d of %d stored events and %d live, want all and 1", got, stored, live)
	}
}

// since, until and limit take any non-negative integer up to the largest
// int64 (Go clients write math.MaxInt64 for "no upper bound"). They were
// checked through a float64, and a value within 512 of math.MaxInt64, which
// rounds up to 2^63, was refused as not an integer.
func TestFilterTimesUpToMaxInt64(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial()
	note := e.event(e.owner, 1, "dated now")
	c.mustPublish(note)
	const most = "9223372036854775807"
	for i, f := range []string{`{"until":` + most + `}`, `{"limit":` + most + `}`, `{"since":0,"until":9223372036854775296}`} {
		c.sendRaw(fmt.Sprintf(`["REQ","s%d",%s]`, i, f))
		m := c.next()
		if verb := str(t, m[0]); verb != "EVENT" || !strings.Contains(string(m[2]), note.ID) {
			t.Fatalf("filter %s: %s, want the note", f, joinRaw(m))
		}
		c.expect("EOSE")
	}
	if got := c.req("since", json.RawMessage(`{"since":`+most+`}`)); len(got) != 0 {
		t.Fatalf("since = MaxInt64: %v, want nothing", got)
	}
	if msg := c.closed("REQ", "over", json.RawMessage(`{"until":9223372036854775808}`)); !strings.HasPrefix(msg, "invalid:") {
		t.Fatalf("until = 2^63: CLOSED %q, want invalid:", msg)
	}
}
