package relay_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// EVENTs pipelined on one connection, good and bad mixed, are handled in
// runs whose signatures are checked in one call: each event still gets its
// own OK with the right prefix, exactly the accepted ones are stored, and a
// REQ and a malformed frame sent amid them are answered in turn.
func TestPipelinedEvents(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial()
	stranger := newKey(t)

	type want struct {
		ok     bool
		prefix string
	}
	wants := map[string][]want{} // by id; a duplicate gets a second OK
	var frames []string
	var stored []string // the kind-1 events that must be stored
	add := func(evt *nostr.Event, w want) {
		b, err := json.Marshal([]any{"EVENT", evt})
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, string(b))
		wants[evt.ID] = append(wants[evt.ID], w)
	}
	var first *nostr.Event
	for i := range 150 {
		content := fmt.Sprintf("pipelined %d", i)
		switch {
		case i%7 == 3:
			evt := e.event(e.owner, 1, content)
			evt.Sig = e.event(stranger, 1, content).Sig // well-formed, but not the owner's
			add(evt, want{false, "invalid: bad signature"})
		case i%11 == 5:
			evt := e.event(e.owner, 1, content)
			evt.Content += " tampered"
			add(evt, want{false, "invalid:"})
		case i%13 == 6:
			add(e.event(stranger, 1, content), want{false, "restricted:"})
		case i%17 == 8:
			add(e.event(e.owner, 1, content, nostr.Tag{"-"}), want{false, "auth-required:"})
		case i%19 == 9:
			add(e.event(e.owner, 20001, content), want{true, ""}) // ephemeral: OK, not stored
		default:
			evt := e.event(e.owner, 1, content)
			add(evt, want{true, ""})
			stored = append(stored, evt.ID)
			if first == nil {
				first = evt
			}
		}
		switch i {
		case 75:
			frames = append(frames, fmt.Sprintf(`["REQ","mid",{"kinds":[1],"authors":[%q]}]`, e.owner.pk))
		case 100:
			frames = append(frames, `["EVENT",{"id":`)
		}
	}
	add(first, want{true, "duplicate:"})

	for _, f := range frames {
		c.sendRaw(f) // all at once: the relay reads ahead while it verifies
	}

	got := map[string][]want{}
	oks, notices, eose := 0, 0, false
	mid := map[string]bool{}
	for oks < len(frames)-2 || notices == 0 || !eose {
		m := c.next()
		switch verb := str(t, m[0]); verb {
		case "OK":
			var ok bool
			if err := json.Unmarshal(m[2], &ok); err != nil {
				t.Fatal(err)
			}
			id := str(t, m[1])
			got[id] = append(got[id], want{ok, str(t, m[3])})
			oks++
		case "NOTICE":
			if msg := str(t, m[1]); !strings.HasPrefix(msg, "invalid:") {
				t.Fatalf("NOTICE %q", msg)
			}
			notices++
		case "EOSE":
			eose = true
		case "EVENT":
			mid[eventID(t, m)] = true
		case "AUTH": // the protected events' challenge
		default:
			t.Fatalf("unexpected %s", joinRaw(m))
		}
	}
	for id, ws := range wants {
		gs := got[id]
		if len(gs) != len(ws) {
			t.Fatalf("%s: %d OKs, want %d", id, len(gs), len(ws))
		}
		for _, w := range ws {
			if !slices.ContainsFunc(gs, func(g want) bool {
				return g.ok == w.ok && strings.HasPrefix(g.prefix, w.prefix) && (w.prefix != "" || g.prefix == "")
			}) {
				t.Errorf("%s: OKs %v, want one %v", id, gs, w)
			}
		}
	}
	if notices != 1 {
		t.Errorf("%d NOTICEs for the one malformed frame", notices)
	}

	c.send("REQ", "all", map[string]any{"kinds": []int{1}, "limit": 500})
	var all []string
	for done := false; !done; {
		m := c.next()
		switch verb := str(t, m[0]); {
		case verb == "EOSE":
			done = true
		case verb == "EVENT" && str(t, m[1]) == "all":
			all = append(all, eventID(t, m))
		case verb == "EVENT":
			mid[eventID(t, m)] = true
		default:
			t.Fatalf("unexpected %s", joinRaw(m))
		}
	}
	if slices.Sort(all); !slices.Equal(all, sorted(stored)) {
		t.Fatalf("stored %d events, want the %d accepted", len(all), len(stored))
	}
	// "mid" got every stored event, from its query or live, and nothing else.
	for len(mid) < len(stored) {
		mid[eventID(t, c.expect("EVENT"))] = true
	}
	for id := range mid {
		if !slices.Contains(stored, id) {
			t.Errorf("subscription got %s, which was not accepted", id)
		}
	}
}

func eventID(t *testing.T, m []json.RawMessage) string {
	t.Helper()
	var evt nostr.Event
	if err := json.Unmarshal(m[len(m)-1], &evt); err != nil {
		t.Fatal(err)
	}
	return evt.ID
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// An AUTH sent amid pipelined EVENTs takes effect exactly there: a protected
// event just before it is refused, the same kind of event just after it is
// accepted, though all of them were read ahead together.
func TestAuthAmidPipelinedEvents(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial()
	var frames []string
	wants := map[string]string{} // id → "ok" or the refusal's prefix
	event := func(evt *nostr.Event, want string) {
		b, err := json.Marshal([]any{"EVENT", evt})
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, string(b))
		wants[evt.ID] = want
	}
	for i := range 40 {
		event(e.event(e.owner, 1, fmt.Sprintf("before %d", i)), "ok")
	}
	event(e.event(e.owner, 1, "protected, before AUTH", nostr.Tag{"-"}), "auth-required:")
	auth := &nostr.Event{Kind: 22242, CreatedAt: nostr.Now(), Tags: nostr.Tags{{"relay", c.url}, {"challenge", c.challenge}}}
	if err := auth.Sign(e.owner.sk); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal([]any{"AUTH", auth})
	frames = append(frames, string(b))
	wants[auth.ID] = "ok"
	event(e.event(e.owner, 1, "protected, after AUTH", nostr.Tag{"-"}), "ok")
	for i := range 40 {
		event(e.event(e.owner, 1, fmt.Sprintf("after %d", i)), "ok")
	}
	for _, f := range frames {
		c.sendRaw(f)
	}
	for len(wants) > 0 {
		m := c.next()
		switch str(t, m[0]) {
		case "AUTH":
			continue
		case "OK":
		default:
			t.Fatalf("unexpected %s", joinRaw(m))
		}
		id := str(t, m[1])
		want, ok := wants[id]
		if !ok {
			t.Fatalf("OK for an unknown or answered id: %s", joinRaw(m))
		}
		delete(wants, id)
		accepted := string(m[2]) == "true"
		if want == "ok" && !accepted || want != "ok" && (accepted || !strings.HasPrefix(str(t, m[3]), want)) {
			t.Errorf("%s: got %s, want %s", id, joinRaw(m), want)
		}
	}
}

// A panic while handling a message closes that connection only, as it did
// when net/http's goroutine handled messages: the node and its other
// clients carry on.
func TestHandlerPanicDropsOnlyItsConnection(t *testing.T) {
	e := newEnv(t, nil)
	var boom atomic.Bool
	now := e.relay.Now
	e.relay.Now = func() time.Time {
		if boom.CompareAndSwap(true, false) {
			panic("boom")
		}
		return now()
	}
	victim, bystander := e.dial(), e.dial()
	boom.Store(true)
	victim.sendRaw(mustJSON(t, "EVENT", e.event(e.owner, 1, "this one panics")))
	for {
		select {
		case _, open := <-victim.msgs:
			if open {
				continue
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the connection whose message panicked is still open")
		}
		break
	}
	bystander.mustPublish(e.event(e.owner, 1, "still served"))
	e.dial().mustPublish(e.event(e.owner, 1, "new clients too"))
}

func mustJSON(t *testing.T, v ...any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
