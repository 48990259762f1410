package anchor

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/nbd-wtf/go-nostr"
)

// anchorOffline anchors evts as one batch (leaf order = slice order) in a
// synthetic block at height with confs confirmations and returns the
// attestations and the chain.
func anchorOffline(t *testing.T, evts []*nostr.Event, height, confs int32) ([]*Attestation, *memChain) {
	t.Helper()
	ids := make([][32]byte, len(evts))
	for i, e := range evts {
		hex.Decode(ids[i][:], []byte(e.ID))
	}
	tree, err := NewTree(ids)
	if err != nil {
		t.Fatal(err)
	}
	chain, blk := fixtureBlock(fixtureTx(tree.Root()), height, confs)
	var atts []*Attestation
	for i, e := range evts {
		atts = append(atts, &Attestation{Claim: e, Proof: fixtureProof(tree, ids, i, blk, height)})
	}
	return atts, chain
}

func TestRulesOffline(t *testing.T) {
	ctx := context.Background()
	a, b := newKey(t), newKey(t)
	ca, cb := claim(t, a, "dup"), claim(t, b, "dup")
	// Same batch: leaf order decides (cb first).
	atts, chain := anchorOffline(t, []*nostr.Event{cb, ca}, 100, 6)
	v, err := Verify(ctx, chain, Query{Handle: "dup"}, nil, atts, Options{})
	if err != nil || v.Status != Verified || v.PubKey != b.PublicKey() {
		t.Fatalf("leaf order: %s %v", v, err)
	}
	v, _ = Verify(ctx, chain, Query{Handle: "dup", PubKey: a.PublicKey()}, nil, atts, Options{})
	if v.Status != Conflict || v.Holder.PubKey != b.PublicKey() {
		t.Fatalf("later leaf: %s", v)
	}
	// Too few confirmations.
	atts, chain = anchorOffline(t, []*nostr.Event{ca}, 100, 2)
	if v, _ := Verify(ctx, chain, Query{Handle: "dup"}, nil, atts, Options{MinConfirmations: 3}); v.Status != Pending || v.Confirmations != 2 {
		t.Fatalf("pending: %s", v)
	}
	// Rotation fork: two rotations of the same claim, both consented by
	// the old key; the anchored one wins, with neither anchored it is INVALID.
	c1, c2 := newKey(t), newKey(t)
	r1, err := identity.Rotate(a, c1, mustClaim(t, ca), identity.ClaimParams{})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := identity.Rotate(a, c2, mustClaim(t, ca), identity.ClaimParams{})
	if err != nil {
		t.Fatal(err)
	}
	atts, chain = anchorOffline(t, []*nostr.Event{ca, r2}, 100, 6)
	v, _ = Verify(ctx, chain, Query{Handle: "dup"}, []*nostr.Event{r1}, atts, Options{})
	if v.Status != Verified || v.PubKey != c2.PublicKey() {
		t.Fatalf("fork decided by anchoring: %s", v)
	}
	atts, chain = anchorOffline(t, []*nostr.Event{ca}, 100, 6)
	if v, _ := Verify(ctx, chain, Query{Handle: "dup"}, []*nostr.Event{r1, r2}, atts, Options{}); v.Status != Invalid {
		t.Fatalf("unanchored fork: %s", v)
	}
	// Verdicts marshal for --json.
	if _, err := jsonMarshal(v); err != nil {
		t.Fatal(err)
	}
}

func TestStoreFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "anchor.db")
	for i := 0; i < 2; i++ { // second open: migrations already applied
		db, err := openDB(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		var v int
		if err := db.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != SchemaVersion {
			t.Fatalf("schema version %d %v", v, err)
		}
		var mode string
		db.QueryRow("PRAGMA journal_mode").Scan(&mode)
		if mode != "wal" {
			t.Fatalf("journal mode %q", mode)
		}
		db.Close()
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v", st.Mode(), err)
	}
	// A store from a newer program is refused.
	db, _ := openDB(ctx, path)
	db.Exec("PRAGMA user_version=99")
	db.Close()
	if _, err := openDB(ctx, path); err == nil {
		t.Fatal("newer schema accepted")
	}
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
