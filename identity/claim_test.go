package identity

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

func TestHandleSyntax(t *testing.T) {
	norm := map[string]string{
		"alice":                 "alice",
		"  @Alice ":             "alice",
		"ＡＬＩＣＥ":                 "alice", // full-width, NFKC
		"bob.smith":             "bob.smith",
		"x_y-z.9":               "x_y-z.9",
		"a":                     "a",
		"@@":                    "",
		"alİce":                 "", // U+0130: non-ASCII after NFKC, though its lower case is "i"
		strings.Repeat("a", 32): strings.Repeat("a", 32),
	}
	for in, want := range norm {
		got, err := NormalizeHandle(in)
		if want == "" {
			if err == nil {
				t.Errorf("NormalizeHandle(%q) accepted", in)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("NormalizeHandle(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := map[string]string{
		"":                      "empty",
		".alice":                "starts or ends with a dot",
		"alice.":                "starts or ends with a dot",
		"al..ice":               "two dots",
		"al ice":                "character",
		"al/ice":                "character",
		"alicé":                 "non-ASCII",
		"аlice":                 "non-ASCII", // Cyrillic а
		"Alice":                 "upper-case",
		strings.Repeat("a", 33): "at most 32",
	}
	for in, reason := range bad {
		err := ValidateHandle(in)
		if !errors.Is(err, ErrInvalidHandle) || !strings.Contains(err.Error(), reason) {
			t.Errorf("ValidateHandle(%q) = %v, want %q", in, err, reason)
		}
	}
	if _, err := NormalizeHandle("alicé"); !errors.Is(err, ErrInvalidHandle) {
		t.Errorf("NormalizeHandle accepted non-ASCII: %v", err)
	}
}

const lnNode = "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619"

func mustKey(t *testing.T) *Key {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustClaim(t *testing.T, evt *nostr.Event, err error) *Claim {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	c, err := ValidateClaim(evt)
	if err != nil {
		t.Fatalf("ValidateClaim: %v", err)
	}
	return c
}

func TestClaimBuildAndValidate(t *testing.T) {
	k := mustKey(t)
	evt, err := NewClaim(k, ClaimParams{Handle: "@Alice", LNNode: lnNode, Relays: []string{"wss://relay.example.com"}})
	c := mustClaim(t, evt, err)
	if c.Type != ClaimFirst || c.Handle != "alice" || c.LNNode != lnNode || len(c.Relays) != 1 || c.PubKey != k.PublicKey() || c.ID != evt.ID {
		t.Fatalf("claim = %+v", c)
	}
	if evt.Kind != KindHandleClaim {
		t.Fatalf("kind %d", evt.Kind)
	}
	if _, err := NewClaim(k, ClaimParams{Handle: "a..b"}); !errors.Is(err, ErrInvalidHandle) {
		t.Fatalf("bad handle: %v", err)
	}
	if _, err := NewClaim(k, ClaimParams{Handle: "a", LNNode: "04" + lnNode[2:]}); !errors.Is(err, ErrInvalidClaim) {
		t.Fatalf("bad ln node: %v", err)
	}
	if _, err := NewClaim(k, ClaimParams{Handle: "a", Relays: []string{"https://x.example"}}); !errors.Is(err, ErrInvalidClaim) {
		t.Fatalf("bad relay: %v", err)
	}
}

// resign re-signs a mutated event with key (so only the mutation is wrong).
func resign(t *testing.T, k *Key, evt *nostr.Event) *nostr.Event {
	t.Helper()
	if err := k.Sign(evt); err != nil {
		t.Fatal(err)
	}
	return evt
}

func TestValidateClaimRejections(t *testing.T) {
	alice, mallory := mustKey(t), mustKey(t)
	genesisEvt, err := NewClaim(alice, ClaimParams{Handle: "alice"})
	genesis := mustClaim(t, genesisEvt, err)
	newKey := mustKey(t)

	cases := []struct {
		name   string
		evt    func() *nostr.Event
		target error
		reason string
	}{
		{"signed by another key", func() *nostr.Event {
			e, _ := NewClaim(alice, ClaimParams{Handle: "alice"})
			mallorySigned, _ := NewClaim(mallory, ClaimParams{Handle: "alice"})
			e.Sig = mallorySigned.Sig // alice's pubkey, mallory's signature
			return e
		}, ErrClaimSignature, "not signed by its pubkey"},
		{"pubkey swapped", func() *nostr.Event {
			e, _ := NewClaim(mallory, ClaimParams{Handle: "alice"})
			e.PubKey = alice.PublicKey() // claims to be alice
			return e
		}, ErrClaimSignature, "altered"},
		{"handle altered after signing", func() *nostr.Event {
			e, _ := NewClaim(alice, ClaimParams{Handle: "alice"})
			e.Tags[0][1] = "bob"
			return e
		}, ErrClaimSignature, "altered"},
		{"wrong kind", func() *nostr.Event {
			return resign(t, alice, &nostr.Event{Kind: 1, Tags: nostr.Tags{{"n", "alice"}}})
		}, ErrInvalidClaim, "kind 1"},
		{"no handle", func() *nostr.Event {
			return resign(t, alice, &nostr.Event{Kind: KindHandleClaim})
		}, ErrInvalidClaim, "no [\"n\", handle]"},
		{"two handles", func() *nostr.Event {
			return resign(t, alice, &nostr.Event{Kind: KindHandleClaim, Tags: nostr.Tags{{"n", "alice"}, {"n", "bob"}}})
		}, ErrInvalidClaim, "more than one \"n\""},
		{"bad handle syntax", func() *nostr.Event {
			return resign(t, alice, &nostr.Event{Kind: KindHandleClaim, Tags: nostr.Tags{{"n", "Alice"}}})
		}, ErrInvalidHandle, "upper-case"},
		{"rotation without consent", func() *nostr.Event {
			return resign(t, newKey, &nostr.Event{Kind: KindHandleClaim, Tags: nostr.Tags{
				{"n", "alice"}, {"prev", genesis.ID, alice.PublicKey()}}})
		}, ErrMissingConsent, "no consent"},
		{"rotation with consent by a stranger", func() *nostr.Event {
			sig, _ := SignRotationConsent(mallory, "alice", genesis.ID, newKey.PublicKey())
			e, _ := NewRotation(newKey, genesis, sig, ClaimParams{})
			return e
		}, ErrBadConsent, "did not sign consent"},
		{"consent for another new key", func() *nostr.Event {
			sig, _ := SignRotationConsent(alice, "alice", genesis.ID, mallory.PublicKey())
			e, _ := NewRotation(newKey, genesis, sig, ClaimParams{}) // consent was for mallory's key
			return e
		}, ErrBadConsent, "did not sign consent"},
		{"consent for another claim id", func() *nostr.Event {
			sig, _ := SignRotationConsent(alice, "alice", strings.Repeat("0", 64), newKey.PublicKey())
			e, _ := NewRotation(newKey, genesis, sig, ClaimParams{})
			return e
		}, ErrBadConsent, "did not sign consent"},
		{"consent in upper-case hex", func() *nostr.Event {
			sig, _ := SignRotationConsent(alice, "alice", genesis.ID, newKey.PublicKey())
			e, _ := NewRotation(newKey, genesis, strings.ToUpper(sig), ClaimParams{})
			return e
		}, ErrBadConsent, "128 lowercase hex"},
		{"two alt tags", func() *nostr.Event {
			return resign(t, alice, &nostr.Event{Kind: KindHandleClaim, Tags: nostr.Tags{{"n", "alice"}, {"alt", "a"}, {"alt", "b"}}})
		}, ErrInvalidClaim, "more than one \"alt\""},
		{"malformed prev", func() *nostr.Event {
			return resign(t, newKey, &nostr.Event{Kind: KindHandleClaim, Tags: nostr.Tags{
				{"n", "alice"}, {"prev", "xyz"}, {"consent", "00"}}})
		}, ErrInvalidClaim, "rotation needs"},
		{"relay with a port but no host", func() *nostr.Event {
			return resign(t, alice, &nostr.Event{Kind: KindHandleClaim, Tags: nostr.Tags{{"n", "alice"}, {"relay", "wss://:443"}}})
		}, ErrInvalidClaim, "needs a host"},
		{"revocation without target", func() *nostr.Event {
			return resign(t, alice, &nostr.Event{Kind: KindHandleRevocation, Tags: nostr.Tags{{"n", "alice"}}})
		}, ErrInvalidClaim, "revocation needs"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ValidateClaim(c.evt())
			if !errors.Is(err, c.target) {
				t.Fatalf("err = %v, want %v", err, c.target)
			}
			if !strings.Contains(err.Error(), c.reason) {
				t.Fatalf("err = %v, want reason %q", err, c.reason)
			}
		})
	}
}

func TestChainRotationRevocation(t *testing.T) {
	k1, k2, k3 := mustKey(t), mustKey(t), mustKey(t)
	t0 := time.Unix(1_700_000_000, 0)
	e1, err := NewClaim(k1, ClaimParams{Handle: "alice", Relays: []string{"wss://one.example"}, CreatedAt: t0})
	c1 := mustClaim(t, e1, err)
	e2, err := Rotate(k1, k2, c1, ClaimParams{LNNode: lnNode, CreatedAt: t0.Add(time.Hour)})
	c2 := mustClaim(t, e2, err)
	if c2.Type != ClaimRotation || c2.PrevID != c1.ID || c2.PrevPubKey != k1.PublicKey() {
		t.Fatalf("rotation = %+v", c2)
	}
	// Rotation by split roles: k2 consents to k3 separately.
	consent, err := SignRotationConsent(k2, "alice", c2.ID, k3.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	e3, err := NewRotation(k3, c2, consent, ClaimParams{Relays: []string{"wss://three.example"}, CreatedAt: t0.Add(2 * time.Hour)})
	c3 := mustClaim(t, e3, err)

	// Order of input does not matter; duplicates are ignored.
	st, err := ValidateChain([]*nostr.Event{e3, e1, e2, e1})
	if err != nil {
		t.Fatal(err)
	}
	if st.Handle != "alice" || st.Genesis.ID != c1.ID || st.Current.ID != c3.ID || len(st.Claims) != 3 || st.Revoked || st.PubKey() != k3.PublicKey() {
		t.Fatalf("state = %+v", st)
	}
	if st.Current.Relays[0] != "wss://three.example" {
		t.Fatal("current claim data not from the latest rotation")
	}

	rev, err := NewRevocation(k3, c3, "leaving", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	st, err = ValidateChain([]*nostr.Event{e1, e2, e3, rev})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Revoked || st.Revocation.ID != rev.ID || st.PubKey() != "" || st.Revocation.Reason != "leaving" {
		t.Fatalf("revoked state = %+v", st)
	}
}

func TestChainRejections(t *testing.T) {
	k1, k2, stranger := mustKey(t), mustKey(t), mustKey(t)
	e1, err := NewClaim(k1, ClaimParams{Handle: "alice"})
	c1 := mustClaim(t, e1, err)
	e2, err := Rotate(k1, k2, c1, ClaimParams{})
	c2 := mustClaim(t, e2, err)

	strangerClaim, _ := NewClaim(stranger, ClaimParams{Handle: "alice"})
	bobClaim, _ := NewClaim(k1, ClaimParams{Handle: "bob"})
	strangerRev, _ := NewRevocation(stranger, c2, "", time.Time{})
	oldKeyRev, _ := NewRevocation(k1, c2, "", time.Time{})
	staleRev, _ := NewRevocation(k2, c1, "", time.Time{}) // targets the superseded claim
	fork, _ := Rotate(k1, stranger, c1, ClaimParams{})    // second rotation of c1
	// A "rotation" whose consent really is from stranger, naming stranger
	// as the old key of c1: its own signature verifies, the chain does not.
	sc, _ := SignRotationConsent(stranger, "alice", c1.ID, stranger.PublicKey())
	fakePrev := &Claim{ID: c1.ID, PubKey: stranger.PublicKey(), Handle: "alice", Type: ClaimFirst}
	hijack, _ := NewRotation(stranger, fakePrev, sc, ClaimParams{})
	orphanPrev := &Claim{ID: strings.Repeat("1", 64), PubKey: k1.PublicKey(), Handle: "alice", Type: ClaimFirst}
	orphan, _ := Rotate(k1, k2, orphanPrev, ClaimParams{})
	noConsent := resign(t, k2, &nostr.Event{Kind: KindHandleClaim, Tags: nostr.Tags{{"n", "alice"}, {"prev", c1.ID, k1.PublicKey()}}})

	cases := []struct {
		name   string
		events []*nostr.Event
		target error
		reason string
	}{
		{"claim by another key", []*nostr.Event{e1, strangerClaim}, ErrBrokenChain, "two first claims"},
		{"rotation without the old key's consent", []*nostr.Event{e1, noConsent}, ErrMissingConsent, "no consent"},
		{"rotation consented by a stranger", []*nostr.Event{e1, hijack}, ErrNotCurrentKey, "is held by " + k1.PublicKey()},
		{"revocation by a stranger", []*nostr.Event{e1, e2, strangerRev}, ErrNotCurrentKey, "only the current key can revoke"},
		{"revocation by the old key", []*nostr.Event{e1, e2, oldKeyRev}, ErrNotCurrentKey, "only the current key can revoke"},
		{"revocation of a superseded claim", []*nostr.Event{e1, e2, staleRev}, ErrBrokenChain, "already rotated"},
		{"fork", []*nostr.Event{e1, e2, fork}, ErrBrokenChain, "fork"},
		{"unknown previous claim", []*nostr.Event{e1, orphan}, ErrBrokenChain, "not in the chain"},
		{"mixed handles", []*nostr.Event{e1, bobClaim}, ErrBrokenChain, "one chain is one handle"},
		{"no first claim", []*nostr.Event{e2}, ErrBrokenChain, "no first claim"},
		{"empty", nil, ErrBrokenChain, "no claim"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ValidateChain(c.events)
			if !errors.Is(err, c.target) {
				t.Fatalf("err = %v, want %v", err, c.target)
			}
			if !strings.Contains(err.Error(), c.reason) {
				t.Fatalf("err = %v, want reason %q", err, c.reason)
			}
		})
	}
}

func TestConsentDigestIsSpecified(t *testing.T) {
	// The digest is exactly SHA-256 of the documented byte string.
	h := "alice"
	prev := strings.Repeat("ab", 32)
	pub := strings.Repeat("cd", 32)
	want := sha256Sum([]byte("anchorchat:handle-rotation:v1\x00alice\x00" + prev + "\x00" + pub))
	if got := RotationConsentDigest(h, prev, pub); got != want {
		t.Fatal("consent digest differs from docs/protocol.md")
	}
	if RotationConsentDigest("alic", prev, pub) == want {
		t.Fatal("handle not bound")
	}
}

func TestProfileEvents(t *testing.T) {
	k := mustKey(t)
	p, err := NewProfileEvent(k, Profile{Name: "alice", NIP05: "alice@example.com"}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := p.CheckSignature(); !ok || p.Kind != 0 || !strings.Contains(p.Content, `"nip05":"alice@example.com"`) || strings.Contains(p.Content, "about") {
		t.Fatalf("profile event %v", p)
	}
	d, err := NewDMRelayListEvent(k, []string{"wss://a.example", "wss://b.example", "wss://a.example"}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := d.CheckSignature(); !ok || d.Kind != 10050 || len(d.Tags) != 2 || d.Tags[0][0] != "relay" {
		t.Fatalf("dm relay list %v", d)
	}
	if _, err := NewDMRelayListEvent(k, []string{"http://x.example"}, time.Time{}); err == nil {
		t.Fatal("http relay accepted")
	}
	if _, err := NewDMRelayListEvent(k, nil, time.Time{}); err == nil {
		t.Fatal("empty list accepted")
	}
}
