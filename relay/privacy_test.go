package relay_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// privateSetup stores one public note and one of each private kind addressed to the owner.
func privateSetup(t *testing.T) (*env, *nostr.Event, []*nostr.Event) {
	e := newEnv(t, nil)
	c := e.dial()
	note := e.event(e.owner, 1, "public")
	c.mustPublish(note)
	var private []*nostr.Event
	for _, kind := range []int{4, 13, 1059} {
		// Seals and DMs authored by the owner; the wrap by a throwaway key, as NIP-59 does.
		k := e.owner
		if kind == 1059 {
			k = newKey(t)
		}
		evt := e.event(k, kind, "secret", nostr.Tag{"p", e.owner.pk})
		c.mustPublish(evt)
		private = append(private, evt)
	}
	return e, note, private
}

func TestPrivateKindsNeedAuth(t *testing.T) {
	e, _, _ := privateSetup(t)
	c := e.dial()
	for _, kinds := range [][]int{{1059}, {13}, {4}, {1, 1059}} {
		c.send("REQ", "dm", map[string]any{"kinds": kinds, "#p": []string{e.owner.pk}})
		// The relay answers with an AUTH challenge and CLOSED auth-required:.
		sawAuth := false
		for {
			m := c.next()
			verb := str(t, m[0])
			if verb == "AUTH" {
				sawAuth = str(t, m[1]) == c.challenge
				continue
			}
			if verb != "CLOSED" || !strings.HasPrefix(str(t, m[2]), "auth-required:") {
				t.Fatalf("kinds %v unauthenticated: got %s", kinds, joinRaw(m))
			}
			break
		}
		if !sawAuth {
			t.Fatalf("kinds %v: no AUTH challenge sent with the refusal", kinds)
		}
	}
	// The connection is still served.
	if got := c.req("pub", map[string]any{"kinds": []int{1}}); len(got) != 1 {
		t.Fatalf("public REQ after refusals: %v", got)
	}
}

func TestPrivateKindsOtherUser(t *testing.T) {
	e, _, private := privateSetup(t)
	c := e.dial()
	c.auth(newKey(t)) // a stranger, authenticated
	if got := c.req("mine", map[string]any{"kinds": []int{4, 13, 1059}}); len(got) != 0 {
		t.Fatalf("a stranger read private events: %v", got)
	}
	if msg := c.closed("REQ", "theirs", map[string]any{"kinds": []int{1059}, "#p": []string{e.owner.pk}}); !strings.HasPrefix(msg, "restricted:") {
		t.Fatalf("asking for someone else's mail: %q", msg)
	}
	if got := c.req("byid", map[string]any{"ids": ids(private...)}); len(got) != 0 {
		t.Fatalf("a stranger read private events by id: %v", got)
	}

	owner := e.dial()
	owner.auth(e.owner)
	got := owner.req("inbox", map[string]any{"kinds": []int{4, 13, 1059}})
	want := ids(private...)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("the owner's inbox: got %v, want %v", got, want)
	}
}

func TestPrivateKindsFilterWithoutKinds(t *testing.T) {
	e, note, private := privateSetup(t)
	for _, who := range []string{"anonymous", "stranger"} {
		c := e.dial()
		if who == "stranger" {
			c.auth(newKey(t))
		}
		for name, f := range map[string]map[string]any{
			"empty filter": {},
			"#p":           {"#p": []string{e.owner.pk}},
			"author":       {"authors": []string{e.owner.pk}},
			"ids":          {"ids": append(ids(private...), note.ID)},
		} {
			got := c.req("x", f)
			if len(got) > 1 || (len(got) == 1 && got[0] != note.ID) {
				t.Fatalf("%s, %s: served %v; only the public note may be served", who, name, got)
			}
			c.send("CLOSE", "x")
		}
	}
}

func TestPrivateKindsLiveSubscription(t *testing.T) {
	e := newEnv(t, nil)
	anon := e.dial()
	anon.req("all", map[string]any{})
	stranger := e.dial()
	stranger.auth(newKey(t))
	stranger.req("all", map[string]any{})
	stranger.req("p", map[string]any{"#p": []string{e.owner.pk}})
	owner := e.dial()
	owner.auth(e.owner)
	owner.req("inbox", map[string]any{"kinds": []int{1059}, "#p": []string{e.owner.pk}})

	sender := e.dial()
	wrap := e.event(newKey(t), 1059, "sealed", nostr.Tag{"p", e.owner.pk})
	sender.mustPublish(wrap)

	m := owner.expect("EVENT")
	var got nostr.Event
	if err := json.Unmarshal(m[2], &got); err != nil || got.ID != wrap.ID {
		t.Fatalf("owner did not get the wrap live: %s", joinRaw(m))
	}
	anon.quiet(200 * time.Millisecond)
	stranger.quiet(50 * time.Millisecond)

	// A public note still reaches everyone, so silence above is not a dead connection.
	note := e.event(e.owner, 1, "hello all")
	sender.mustPublish(note)
	anon.expect("EVENT")
	stranger.expect("EVENT")
}

func TestPrivateKindsCount(t *testing.T) {
	e, _, _ := privateSetup(t)
	count := func(c *client, f ...any) int64 {
		t.Helper()
		c.send(append([]any{"COUNT", "n"}, f...)...)
		m := c.expect("COUNT")
		var res struct{ Count int64 }
		if err := json.Unmarshal(m[2], &res); err != nil {
			t.Fatal(err)
		}
		return res.Count
	}
	anon := e.dial()
	if n := count(anon, map[string]any{}); n != 1 {
		t.Fatalf("anonymous COUNT without kinds = %d, want 1 (the public note)", n)
	}
	if msg := anon.closed("COUNT", "m", map[string]any{"kinds": []int{1059}}); !strings.HasPrefix(msg, "auth-required:") {
		t.Fatalf("anonymous COUNT of wraps: %q", msg)
	}
	stranger := e.dial()
	stranger.auth(newKey(t))
	if n := count(stranger, map[string]any{"#p": []string{e.owner.pk}}); n != 0 {
		t.Fatalf("stranger COUNT #p owner = %d, want 0", n)
	}
	// Several filters, counted as one set, keep the rule too.
	if n := count(stranger, map[string]any{}, map[string]any{"#p": []string{e.owner.pk}}, map[string]any{"authors": []string{e.owner.pk}}); n != 1 {
		t.Fatalf("stranger COUNT of three filters = %d, want 1 (the public note)", n)
	}
	owner := e.dial()
	owner.auth(e.owner)
	if n := count(owner, map[string]any{}); n != 4 {
		t.Fatalf("owner COUNT = %d, want 4", n)
	}
	if n := count(owner, map[string]any{}, map[string]any{"#p": []string{e.owner.pk}}); n != 4 {
		t.Fatalf("owner COUNT of two filters = %d, want 4", n)
	}
}
