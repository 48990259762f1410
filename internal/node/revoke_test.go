package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/storage"
)

// ownChain finds the chain of the node's key in the store: back from the
// key's claim to the first one, forward through rotations, and revocations of
// the current claim by its key; competing first claims and strangers'
// revocations are not part of it.
func TestOwnChain(t *testing.T) {
	ctx := context.Background()
	st := tempStore(t)
	keys := make([]*identity.Key, 4)
	for i := range keys {
		var err error
		if keys[i], err = identity.GenerateKey(); err != nil {
			t.Fatal(err)
		}
	}
	k1, k2, stranger, other := keys[0], keys[1], keys[2], keys[3]
	save := func(evt *nostr.Event, err error) *identity.Claim {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Save(ctx, evt); err != nil {
			t.Fatal(err)
		}
		c, err := identity.ValidateClaim(evt)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	at := time.Now().Add(-time.Hour)
	chainOf := func(k *identity.Key) (*identity.ChainState, error) {
		n := &Node{store: st, key: k}
		return n.ownChain(ctx, "dave")
	}

	if _, err := chainOf(k1); !errors.Is(err, errNoClaim) {
		t.Fatalf("nothing stored: %v, want errNoClaim", err)
	}
	first := save(identity.NewClaim(k1, identity.ClaimParams{Handle: "dave", CreatedAt: at}))
	save(identity.NewClaim(other, identity.ClaimParams{Handle: "dave", CreatedAt: at.Add(time.Second)})) // competing
	save(identity.NewClaim(k1, identity.ClaimParams{Handle: "erin", CreatedAt: at}))                     // another handle
	if s, err := chainOf(k1); err != nil || s.Current.ID != first.ID || s.Revoked {
		t.Fatalf("one claim: %+v %v", s, err)
	}

	// A stranger's "rotation" of k1's claim, with consent signed by the
	// stranger itself, is valid on its own but not part of the chain.
	forgedPrev := *first
	forgedPrev.PubKey = stranger.PublicKey()
	save(identity.Rotate(stranger, stranger, &forgedPrev, identity.ClaimParams{Handle: "dave", CreatedAt: at.Add(30 * time.Second)}))
	if s, err := chainOf(k1); err != nil || s.Current.ID != first.ID {
		t.Fatalf("after a forged rotation: %+v %v", s, err)
	}

	rot := save(identity.Rotate(k1, k2, first, identity.ClaimParams{Handle: "dave", CreatedAt: at.Add(time.Minute)}))
	// More first claims of the handle than a page holds, all newer than the
	// rotation (some in one second), do not hide it.
	errc := make(chan error, 1100)
	for i := range 1100 {
		c, err := identity.NewClaim(other, identity.ClaimParams{Handle: "dave", CreatedAt: at.Add(2*time.Minute + time.Duration(i/3)*time.Second), Relays: []string{fmt.Sprintf("wss://r%d.example", i)}})
		if err != nil {
			t.Fatal(err)
		}
		st.SaveAsync(c, func(err error) { errc <- err })
	}
	for range 1100 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []*identity.Key{k1, k2} {
		s, err := chainOf(k)
		if err != nil || s.Current.ID != rot.ID || s.Genesis.ID != first.ID || s.Revoked {
			t.Fatalf("after the rotation, seen from %s: %+v %v", k.PublicKey()[:8], s, err)
		}
	}
	save(identity.NewRevocation(stranger, rot, "not mine to revoke", at.Add(2*time.Minute)))
	save(identity.NewRevocation(k1, rot, "no longer mine either", at.Add(2*time.Minute)))
	if s, err := chainOf(k2); err != nil || s.Revoked {
		t.Fatalf("revocations by keys that do not hold the handle: %+v %v", s, err)
	}
	rev := save(identity.NewRevocation(k2, rot, "lost", at.Add(3*time.Minute)))
	s, err := chainOf(k1)
	if err != nil || !s.Revoked || s.Revocation.ID != rev.ID || s.Revocation.Reason != "lost" {
		t.Fatalf("after k2 revoked: %+v %v", s, err)
	}
}

// tempStore opens an event store in a temporary directory, closed when the test ends.
func tempStore(t *testing.T) *storage.Store {
	t.Helper()
	st, err := storage.Open(context.Background(), storage.Options{Path: filepath.Join(t.TempDir(), "events.db"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
