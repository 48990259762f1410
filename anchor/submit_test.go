package anchor

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/wallet"
)

// Submitting never reaches the chain: a call would panic on the nil interface.
type noChain struct{ wallet.Chain }

// SubmitStored catches up on events a relay stored: it skips those the rules
// or the policy refuse instead of failing, stores the rest, and does not
// validate again those it knows. SubmitMany still refuses all for one.
func TestSubmitStored(t *testing.T) {
	ctx := context.Background()
	owner, stranger := newKey(t), newKey(t)
	var accepted []string // pubkeys Accept was asked about
	b, err := Open(ctx, Config{Path: filepath.Join(t.TempDir(), "anchor.db"), Wallet: noWallet{}, Chain: noChain{}, Signer: owner,
		Accept: func(c *identity.Claim) error {
			accepted = append(accepted, c.PubKey)
			if c.PubKey != owner.PublicKey() {
				return errors.New("not the owner")
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	mine := claim(t, owner, "dave")
	rev, err := identity.NewRevocation(owner, mustClaim(t, mine), "lost", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	theirs := claim(t, stranger, "erin")
	forged := claim(t, owner, "frank")
	forged.Content = "changed after signing"
	evts := []*nostr.Event{mine, theirs, forged, rev}

	if n, err := b.SubmitMany(ctx, evts); err == nil || n != 0 {
		t.Fatalf("SubmitMany with refused events: %d new, %v; want an error and nothing stored", n, err)
	}
	accepted = nil
	added, refused, err := b.SubmitStored(ctx, evts)
	if err != nil || added != 2 || refused != 2 {
		t.Fatalf("SubmitStored: %d new, %d refused, %v; want 2 and 2", added, refused, err)
	}
	for _, e := range []*nostr.Event{mine, rev} {
		if st, err := b.Status(ctx, e.ID); err != nil || !st.Pending {
			t.Fatalf("status of %s: %+v %v; want pending", e.ID, st, err)
		}
	}
	for _, e := range []*nostr.Event{theirs, forged} {
		if _, err := b.Status(ctx, e.ID); err == nil {
			t.Fatalf("refused event %s stored", e.ID)
		}
	}

	accepted = nil
	added, refused, err = b.SubmitStored(ctx, evts)
	if err != nil || added != 0 || refused != 2 {
		t.Fatalf("SubmitStored again: %d new, %d refused, %v; want 0 and 2", added, refused, err)
	}
	if len(accepted) != 1 || accepted[0] != stranger.PublicKey() {
		t.Fatalf("the policy was asked about %v the second time; want only the stranger's claim (known events are not validated again)", accepted)
	}
	if added, refused, err := b.SubmitStored(ctx, nil); err != nil || added != 0 || refused != 0 {
		t.Fatalf("SubmitStored of nothing: %d, %d, %v", added, refused, err)
	}
}
