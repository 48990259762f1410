package identity

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// FuzzValidateClaim signs whatever tags and content the fuzzer makes up as a
// kind 3780 or 3781 event, as anyone could publish to a relay, and
// validates it: no panic, every refusal wraps one of the claim errors, and
// an accepted claim says only what its tags allow (a valid handle, valid
// relay URLs, at most MaxClaimRelays, the signer's key, the type its kind
// and tags give). A first claim accepted alone is a chain of one.
func FuzzValidateClaim(f *testing.F) {
	key, err := GenerateKey()
	if err != nil {
		f.Fatal(err)
	}
	other, err := GenerateKey()
	if err != nil {
		f.Fatal(err)
	}
	first, err := NewClaim(other, ClaimParams{Handle: "alice", Relays: []string{"wss://relay.example.com"}, LNNode: "02" + strings.Repeat("ab", 32), CreatedAt: time.Unix(1700000000, 0)})
	if err != nil {
		f.Fatal(err)
	}
	c, err := ValidateClaim(first)
	if err != nil {
		f.Fatal(err)
	}
	rot, err := Rotate(other, key, c, ClaimParams{Handle: "alice", CreatedAt: time.Unix(1700000001, 0)})
	if err != nil {
		f.Fatal(err)
	}
	rev, err := NewRevocation(other, c, "lost", time.Unix(1700000002, 0))
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range []*nostr.Event{first, rot, rev} {
		tags, _ := json.Marshal(e.Tags)
		f.Add(e.Kind, string(tags), e.Content)
	}
	f.Add(KindHandleClaim, `[["n","bob"],["n","bob"]]`, "")
	f.Add(KindHandleClaim, `[["n"],["relay"],["ln"],["prev"],["consent"]]`, "")
	f.Add(KindHandleClaim, `[["n","a.b"],["relay","ws://[::1]:7000"],["prev","`+strings.Repeat("0", 64)+`","`+key.PublicKey()+`"],["consent","`+strings.Repeat("0", 128)+`"]]`, "")
	f.Add(KindHandleRevocation, `[["n","bob"],["e","`+strings.Repeat("f", 64)+`"]]`, strings.Repeat("x", MaxRevokeReason+1))
	f.Add(1, `[]`, "")
	f.Add(KindHandleClaim, `[["n","Bob"],["relay","wss://relay.example.com"]]`, "")

	f.Fuzz(func(t *testing.T, kind int, tagsJSON, content string) {
		var tags nostr.Tags
		if err := json.Unmarshal([]byte(tagsJSON), &tags); err != nil {
			t.Skip()
		}
		evt := &nostr.Event{Kind: kind, Tags: tags, Content: content, CreatedAt: 1700000000}
		if err := key.Sign(evt); err != nil {
			t.Skip()
		}
		c, err := ValidateClaim(evt)
		_, _ = ValidateChain([]*nostr.Event{evt, evt})
		if err != nil {
			if !errors.Is(err, ErrInvalidClaim) && !errors.Is(err, ErrClaimSignature) && !errors.Is(err, ErrMissingConsent) && !errors.Is(err, ErrBadConsent) {
				t.Fatalf("refusal %v wraps none of the claim errors", err)
			}
			return
		}
		if c.PubKey != key.PublicKey() || c.ID != evt.ID || c.Event != evt {
			t.Fatalf("claim %+v: not the signed event's key and id", c)
		}
		if err := ValidateHandle(c.Handle); err != nil {
			t.Fatalf("accepted handle %q: %v", c.Handle, err)
		}
		if len(c.Relays) > MaxClaimRelays {
			t.Fatalf("accepted %d relays", len(c.Relays))
		}
		for _, r := range c.Relays {
			if err := CheckRelayURL(r); err != nil {
				t.Fatalf("accepted relay %q: %v", r, err)
			}
		}
		switch {
		case kind == KindHandleRevocation:
			if c.Type != ClaimRevocation || !nostr.IsValid32ByteHex(c.Revokes) || len(c.Reason) > MaxRevokeReason {
				t.Fatalf("revocation accepted as %+v", c)
			}
		case kind != KindHandleClaim:
			t.Fatalf("kind %d accepted", kind)
		case c.Type == ClaimRotation:
			// Only a consent the old key signed (the seed's) gets here.
			if VerifyDigest(c.PrevPubKey, RotationConsentDigest(c.Handle, c.PrevID, c.PubKey), c.Consent) != nil {
				t.Fatalf("rotation accepted without the old key's consent: %+v", c)
			}
		case c.Type == ClaimFirst:
			st, err := ValidateChain([]*nostr.Event{evt})
			if err != nil || st.Current.ID != evt.ID || st.PubKey() != key.PublicKey() || st.Handle != c.Handle {
				t.Fatalf("a first claim alone: chain %+v, %v", st, err)
			}
		default:
			t.Fatalf("claim type %v", c.Type)
		}
	})
}
