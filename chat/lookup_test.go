package chat

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anchorchat/anchorchat/identity"
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

// A handle moved to a new key by a rotation (signed by the new key, with
// the old key's consent) resolves to the new key, and a revoked handle to
// no key at all: the old key may be lost or stolen, which is why its
// holder rotated or revoked. The old key is no longer shown under the
// handle, neither once the handle is looked up again nor when the old key
// writes to us.
func TestHandleFollowsRotationAndRevocation(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	alice, bob := newUser(t, clk, "alice"), newUser(t, clk, "bob")
	alice.publishDMRelays(t, alice.relay.url, alice.relay.url)
	dir := relaytest.Start(t, relaytest.Options{Open: true, Now: clk.Now})
	oldKey, newKey := bob.key, newKey(t)

	first := publishClaim(t, dir.URL, oldKey, identity.ClaimParams{Handle: "bob", CreatedAt: clk.Now().Add(-time.Hour)})
	as := alice.start(t, func(c *Config) { c.DiscoveryRelays = []string{dir.URL} })
	c, err := as.Resolve(ctx, "@bob")
	if err != nil || c.PubKey != oldKey.PublicKey() || c.Handle != "bob" {
		t.Fatalf("@bob before the rotation: %+v, %v", c, err)
	}

	cur := publishRotation(t, dir.URL, oldKey, newKey, first, clk.Now())

	// The old key writes: alice looks its handle up again.
	bs := bob.start(t, func(c *Config) { c.DiscoveryRelays = []string{alice.relay.url} })
	if _, err := bs.Send(ctx, []string{alice.key.PublicKey()}, "still me", SendOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the old key no longer shown as @bob", func() (bool, error) {
		old, err := as.contactStatus(ctx, oldKey.PublicKey())
		return err == nil && old.Handle == "" && old.Status() == IdentityKeyOnly, err
	})

	c, err = as.Resolve(ctx, "@bob")
	if err != nil {
		t.Fatal(err)
	}
	if c.PubKey != newKey.PublicKey() || c.Handle != "bob" || c.Verdict != "" {
		t.Fatalf("@bob after the rotation: key %s handle %q verdict %q, want the new key %s", c.PubKey, c.Handle, c.Verdict, newKey.PublicKey())
	}

	rev, err := identity.NewRevocation(newKey, cur, "", clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	publishTo(t, dir.URL, newKey, rev)
	if c, err := as.Resolve(ctx, "@bob"); !errors.Is(err, ErrUnknownContact) {
		t.Fatalf("a revoked handle resolved: %+v, %v", c, err)
	}
	if c, err := as.contactStatus(ctx, newKey.PublicKey()); err != nil || c.Handle != "" {
		t.Fatalf("the revoked handle still shown for its last key: %q, %v", c.Handle, err)
	}
}

// A stolen old key cannot end a handle its owner rotated away from it: a
// revocation of the rotated claim, signed by that claim's key, makes a fork
// that only anchoring decides (protocol.md), not a revoked handle; and
// nothing stored for the new key is forgotten. A stranger's backdated first
// claim of a handle does not strip the handle from the key it is stored
// for either (two keys claiming it is for the verdict to judge).
func TestHandleKeptAgainstAStolenKeyAndABackdatedClaim(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	alice, bob := newUser(t, clk, "alice"), newUser(t, clk, "bob")
	alice.publishDMRelays(t, alice.relay.url, alice.relay.url)
	dir := relaytest.Start(t, relaytest.Options{Open: true, Now: clk.Now})
	oldKey, rotated := bob.key, newKey(t)

	prev := publishClaim(t, dir.URL, oldKey, identity.ClaimParams{Handle: "bob", CreatedAt: clk.Now().Add(-time.Hour)})
	publishRotation(t, dir.URL, oldKey, rotated, prev, clk.Now().Add(-time.Minute))
	as := alice.start(t, func(c *Config) { c.DiscoveryRelays = []string{dir.URL} })
	if c, err := as.Resolve(ctx, "@bob"); err != nil || c.PubKey != rotated.PublicKey() {
		t.Fatalf("@bob after the rotation: %+v, %v", c, err)
	}

	// The thief signs a revocation of the first claim with the old key.
	theft, err := identity.NewRevocation(oldKey, prev, "mine now", clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	publishTo(t, dir.URL, oldKey, theft)
	c, err := as.Resolve(ctx, "@bob")
	if err == nil || strings.Contains(err.Error(), "was revoked by its holder") || !strings.Contains(err.Error(), "anchoring") {
		t.Fatalf("@bob with a rotation and a revocation of the same claim: %+v, %v; want a fork, not a revoked handle", c, err)
	}
	if c, err := as.contactStatus(ctx, rotated.PublicKey()); err != nil || c.Handle != "bob" {
		t.Fatalf("the new key's handle was forgotten over the stolen key's revocation: %q, %v", c.Handle, err)
	}

	// Another handle, claimed by carol; a stranger then claims it with an
	// earlier date.
	carol := newKey(t)
	publishClaim(t, dir.URL, carol, identity.ClaimParams{Handle: "carol", CreatedAt: clk.Now().Add(-time.Hour)})
	if c, err := as.Resolve(ctx, "@carol"); err != nil || c.PubKey != carol.PublicKey() {
		t.Fatalf("@carol: %+v, %v", c, err)
	}
	stranger := newKey(t)
	publishClaim(t, dir.URL, stranger, identity.ClaimParams{Handle: "carol", CreatedAt: clk.Now().Add(-365 * 24 * time.Hour)})
	if c, err := as.Resolve(ctx, "@carol"); err != nil || c.Verdict == "" {
		t.Fatalf("@carol claimed by two keys: %+v, %v; want a verdict saying so", c, err)
	}
	if c, err := as.contactStatus(ctx, carol.PublicKey()); err != nil || c.Handle != "carol" {
		t.Fatalf("carol's handle was stripped by a stranger's backdated claim: %q, %v", c.Handle, err)
	}
}

// publishClaim signs a first claim with key and publishes it to url.
func publishClaim(t *testing.T, url string, key *identity.Key, p identity.ClaimParams) *identity.Claim {
	t.Helper()
	evt, err := identity.NewClaim(key, p)
	if err != nil {
		t.Fatal(err)
	}
	publishTo(t, url, key, evt)
	c, err := identity.ValidateClaim(evt)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// publishRotation rotates prev from oldKey to newKey at time at and
// publishes the rotation to url.
func publishRotation(t *testing.T, url string, oldKey, newKey *identity.Key, prev *identity.Claim, at time.Time) *identity.Claim {
	t.Helper()
	evt, err := identity.Rotate(oldKey, newKey, prev, identity.ClaimParams{CreatedAt: at})
	if err != nil {
		t.Fatal(err)
	}
	publishTo(t, url, newKey, evt)
	c, err := identity.ValidateClaim(evt)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
