package anchor

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

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

// When a claim has several successors, each revocation competes with a
// rotation by its own anchoring: the earliest anchored successor is
// taken. Alice revokes her claim (anchored at 101); a thief holding her
// key rotates the handle to himself (anchored later, at 102) and signs a
// second revocation whose id sorts before Alice's, never anchored. The
// verifier used to keep only the lowest-id revocation, so the fork was
// "anchored rotation vs unanchored revocation" and the thief was VERIFIED.
// With the rotation anchored first, it wins whatever the revocations; with
// revocations alone, none anchored, the handle is revoked (no fork).
func TestEarliestAnchoredRevocationBeatsLaterRotation(t *testing.T) {
	ctx := context.Background()
	alice, thief := newKey(t), newKey(t)
	g := claim(t, alice, "victim")
	gc := mustClaim(t, g)
	base := time.Unix(1_800_000_000, 0)
	r1, err := identity.NewRevocation(alice, gc, "key stolen", base)
	if err != nil {
		t.Fatal(err)
	}
	rot, err := identity.Rotate(alice, thief, gc, identity.ClaimParams{CreatedAt: base.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	// The thief grinds created_at until his revocation's id sorts first.
	var r0 *nostr.Event
	for i := 1; ; i++ {
		r0, err = identity.NewRevocation(alice, gc, "", base.Add(time.Duration(i)*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if r0.ID < r1.ID {
			break
		}
	}
	attG, chainG := anchorOffline(t, []*nostr.Event{g}, 100, 8)
	attR1, chainR1 := anchorOffline(t, []*nostr.Event{r1}, 101, 7)
	attRot, chainRot := anchorOffline(t, []*nostr.Event{rot}, 102, 6)
	chain := mergeChains(chainG, chainR1, chainRot)
	atts := append(append(attG, attR1...), attRot...)

	for _, evts := range [][]*nostr.Event{{g, r1, rot}, {g, r1, rot, r0}} {
		v, err := Verify(ctx, chain, Query{Handle: "victim"}, evts, atts, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if ev := v.Evidence(); v.Status != Revoked || ev[len(ev)-1].ID != r1.ID {
			t.Fatalf("%d events: the revocation anchored before the rotation must end the chain: %s (evidence %v)", len(evts), v, ids(v.Evidence()))
		}
	}

	// The rotation anchored first wins over both revocations.
	attRot, chainRot = anchorOffline(t, []*nostr.Event{rot}, 101, 7)
	attR1, chainR1 = anchorOffline(t, []*nostr.Event{r1}, 102, 6)
	chain = mergeChains(chainG, chainRot, chainR1)
	atts = append(append(attG, attRot...), attR1...)
	v, err := Verify(ctx, chain, Query{Handle: "victim"}, []*nostr.Event{g, r1, rot, r0}, atts, Options{})
	if err != nil || v.Status != Verified || v.PubKey != thief.PublicKey() {
		t.Fatalf("rotation anchored before every revocation: %s %v", v, err)
	}

	// Revocations alone are no fork, anchored or not.
	v, err = Verify(ctx, chainG, Query{Handle: "victim"}, []*nostr.Event{g, r1, r0}, attG, Options{})
	if err != nil || v.Status != Revoked {
		t.Fatalf("two unanchored revocations: %s %v", v, err)
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
