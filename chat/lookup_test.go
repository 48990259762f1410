package chat

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/anchorchat/anchorchat/internal/relaytest"
	"github.com/nbd-wtf/go-nostr"
)

// answeringRelay answers every REQ with evts, then EOSE, whatever the
// filter asked for.
func answeringRelay(t *testing.T, evts ...*nostr.Event) string {
	t.Helper()
	return relaytest.Scripted(t, func(env nostr.Envelope) []string {
		req, ok := env.(*nostr.ReqEnvelope)
		if !ok {
			return nil
		}
		var frames []string
		for _, e := range evts {
			b, _ := json.Marshal([]any{"EVENT", req.SubscriptionID, e})
			frames = append(frames, string(b))
		}
		b, _ := json.Marshal([]any{"EOSE", req.SubscriptionID})
		return append(frames, string(b))
	})
}

// A relay asked for a contact's DM relay list that answers with someone
// else's list (validly signed, dated in the future) or with the contact's
// other events must not decide where the contact's mail goes.
func TestDMRelayLookupIgnoresWhatWasNotAskedFor(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	alice, bob := newUser(t, clk, "alice"), newUser(t, clk, "bob")
	bob.publishDMRelays(t, bob.relay.url, bob.relay.url)

	mallory := newKey(t)
	diverted := &nostr.Event{Kind: KindDMRelayList, CreatedAt: nostr.Timestamp(clk.Now().Add(24 * time.Hour).Unix()),
		Tags: nostr.Tags{{"relay", "ws://mallory.example"}}}
	if err := mallory.Sign(diverted); err != nil {
		t.Fatal(err)
	}
	other := &nostr.Event{Kind: 1, CreatedAt: nostr.Timestamp(clk.Now().Add(time.Hour).Unix()),
		Tags: nostr.Tags{{"relay", "ws://elsewhere.example"}}}
	if err := bob.key.Sign(other); err != nil {
		t.Fatal(err)
	}
	hostile := answeringRelay(t, diverted, other)

	as := alice.start(t, func(c *Config) { c.DiscoveryRelays = []string{hostile, bob.relay.url} })
	got, err := as.dmRelaysFor(ctx, bob.key.PublicKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{bob.relay.url}) {
		t.Fatalf("bob's DM relays %v, want his own list %v", got, []string{bob.relay.url})
	}
}
