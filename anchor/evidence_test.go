package anchor

import (
	"context"
	"maps"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/internal/relaytest"
)

// attested anchors claim alone in a block at height and returns the chain
// and the attestation event for it, signed by attestor.
func attested(t *testing.T, attestor EventSigner, claim *nostr.Event, height int32) (*memChain, *nostr.Event) {
	t.Helper()
	atts, chain := anchorOffline(t, []*nostr.Event{claim}, height, 6)
	evt, err := NewAttestationEvent(attestor, claim, atts[0].Proof, nostr.Now())
	if err != nil {
		t.Fatal(err)
	}
	return chain, evt
}

func mergeChains(cs ...*memChain) *memChain {
	m := &memChain{headers: map[chainhash.Hash]*wire.BlockHeader{}, byH: map[int32]chainhash.Hash{}}
	for _, c := range cs {
		maps.Copy(m.headers, c.headers)
		maps.Copy(m.byH, c.byH)
		m.best = max(m.best, c.best)
	}
	return m
}

// Gina's claim of @gina is anchored first; Mallory anchors a claim of the
// same handle later and floods the relays until Gina's claim and
// attestation no longer come back. A node that verified Gina once kept
// the evidence and still finds her the holder; without it, Mallory wins.
func TestKeptEvidenceOutlivesAFlood(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gina, mallory, attestor := newKey(t), newKey(t), newKey(t)
	g, m := claim(t, gina, "gina"), claim(t, mallory, "gina")
	chainG, attG := attested(t, attestor, g, 100)
	chainM, attM := attested(t, attestor, m, 200)
	chain := mergeChains(chainG, chainM)

	before := relaytest.Start(t, relaytest.Options{Open: true})
	after := relaytest.Start(t, relaytest.Options{Open: true}) // what a flood leaves visible
	for _, e := range []*nostr.Event{g, attG, m, attM} {
		if err := before.Store.Save(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range []*nostr.Event{m, attM} {
		if err := after.Store.Save(ctx, e); err != nil {
			t.Fatal(err)
		}
	}

	b, err := Open(ctx, Config{Path: filepath.Join(t.TempDir(), "anchor.db"), Wallet: noWallet{}, Chain: &oneBlockChain{}, Signer: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	vf := &Verifier{Chain: chain, Relays: []string{before.URL}, Sources: []Source{BatcherSource(b)}, Keep: b.KeepEvidence, CacheTTL: -1}
	v, err := vf.Check(ctx, Query{Handle: "gina"})
	if err != nil || v.Status != Verified || v.PubKey != gina.PublicKey() {
		t.Fatalf("first check: %s %v", v, err)
	}
	if ev := v.Evidence(); len(ev) != 2 || ev[0].ID != g.ID || ev[1].ID != attG.ID {
		t.Fatalf("evidence %v: want gina's claim, then its attestation", ids(ev))
	}

	// Without kept evidence, the flood hands Mallory the handle...
	fresh := &Verifier{Chain: chain, Relays: []string{after.URL}, CacheTTL: -1}
	if v, err := fresh.Check(ctx, Query{Handle: "gina"}); err != nil || v.PubKey != mallory.PublicKey() {
		t.Fatalf("the premise: without evidence the verdict is %s %v", v, err)
	}
	// ...but not to the node that kept it, asked by handle or by key.
	vf.Relays = []string{after.URL}
	for _, q := range []Query{{Handle: "gina"}, {Handle: "gina", PubKey: gina.PublicKey()}, {PubKey: gina.PublicKey()}} {
		v, err := vf.Check(ctx, q)
		if err != nil || v.Status != Verified || v.PubKey != gina.PublicKey() {
			t.Fatalf("%+v after the flood: %s %v", q, v, err)
		}
	}
	for _, q := range []Query{{Handle: "gina", PubKey: mallory.PublicKey()}, {PubKey: mallory.PublicKey()}} {
		if v, _ := vf.Check(ctx, q); v.Status != Conflict || v.Holder == nil || v.Holder.PubKey != gina.PublicKey() {
			t.Fatalf("mallory %+v after the flood: %s", q, v)
		}
	}
	// Kept once: checking again adds no rows.
	var n int
	if err := b.db.QueryRow(`SELECT count(*) FROM evidence`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("%d evidence rows (%v), want 2", n, err)
	}
}

func ids(evts []*nostr.Event) []string {
	var s []string
	for _, e := range evts {
		s = append(s, e.ID)
	}
	return s
}

// keptRows reads the ids kept for handle, oldest first.
func keptRows(t *testing.T, b *Batcher, handle string) []string {
	t.Helper()
	rows, err := b.db.Query(`SELECT id FROM evidence WHERE handle = ? ORDER BY kept_at, id`, handle)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var s []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		s = append(s, id)
	}
	return s
}

// Mallory anchors more competing first claims of @gina than a handle's
// evidence can hold, all in one batch after Gina's. The evidence is
// Gina's chain and its anchoring only, so none of Mallory's can push
// Gina's attestation out of what is kept.
func TestEvidenceLeavesOutCompetingClaims(t *testing.T) {
	ctx := context.Background()
	gina, attestor := newKey(t), newKey(t)
	g := claim(t, gina, "gina")
	chainG, attG := attested(t, attestor, g, 100)
	var flood []*nostr.Event
	for range MaxEvidencePerHandle + 44 {
		flood = append(flood, claim(t, newKey(t), "gina"))
	}
	fatts, chainM := anchorOffline(t, flood, 200, 6)
	attEvts := []*nostr.Event{attG}
	for _, a := range fatts {
		e, err := NewAttestationEvent(attestor, a.Claim, a.Proof, nostr.Now())
		if err != nil {
			t.Fatal(err)
		}
		attEvts = append(attEvts, e)
	}
	atts, errs := ParseAttestations(attEvts)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	v, err := Verify(ctx, mergeChains(chainG, chainM), Query{Handle: "gina"}, append(flood, g), atts, Options{})
	if err != nil || v.Status != Verified || v.PubKey != gina.PublicKey() {
		t.Fatalf("%s %v", v, err)
	}
	if ev := v.Evidence(); len(ev) != 2 || ev[0].ID != g.ID || ev[1].ID != attG.ID {
		t.Fatalf("evidence of %d events, starting %v: want gina's claim, then its attestation", len(ev), ids(ev)[:min(2, len(ev))])
	}
}

// A rotation's evidence follows the chain: each claim, then the
// attestation of its anchoring.
func TestEvidenceFollowsTheChain(t *testing.T) {
	ctx := context.Background()
	k1, k2, attestor := newKey(t), newKey(t), newKey(t)
	g := claim(t, k1, "gina")
	chain1, attG := attested(t, attestor, g, 100)
	rot, err := identity.Rotate(k1, k2, mustClaim(t, g), identity.ClaimParams{Handle: "gina"})
	if err != nil {
		t.Fatal(err)
	}
	chain2, attR := attested(t, attestor, rot, 150)
	atts, errs := ParseAttestations([]*nostr.Event{attR, attG})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	v, err := Verify(ctx, mergeChains(chain1, chain2), Query{Handle: "gina"}, []*nostr.Event{rot, g}, atts, Options{})
	if err != nil || v.Status != Verified || v.PubKey != k2.PublicKey() {
		t.Fatalf("%s %v", v, err)
	}
	want := []string{g.ID, attG.ID, rot.ID, attR.ID}
	if got := ids(v.Evidence()); !slices.Equal(got, want) {
		t.Fatalf("evidence %v, want %v", got, want)
	}
}

// When a handle's rows are full (here with the evidence of an earlier
// verdict), the newest verdict's evidence still goes in: the oldest rows
// outside it make room. Keeping what is kept writes nothing.
func TestKeepEvidenceMakesRoom(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	b, err := Open(ctx, Config{Path: filepath.Join(t.TempDir(), "anchor.db"), Wallet: noWallet{}, Chain: &oneBlockChain{},
		Signer: newKey(t), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var old []*nostr.Event
	for range MaxEvidencePerHandle {
		old = append(old, claim(t, newKey(t), "gina"))
	}
	// Kept in two verdicts: the first half is the oldest.
	if err := b.KeepEvidence(ctx, "gina", old[:MaxEvidencePerHandle/2]); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour)
	if err := b.KeepEvidence(ctx, "gina", old); err != nil {
		t.Fatal(err)
	}
	if n := len(keptRows(t, b, "gina")); n != MaxEvidencePerHandle {
		t.Fatalf("%d rows, want %d", n, MaxEvidencePerHandle)
	}
	now = now.Add(time.Hour)
	gina := newKey(t)
	g := claim(t, gina, "gina")
	_, attG := attested(t, newKey(t), g, 100)
	if err := b.KeepEvidence(ctx, "gina", []*nostr.Event{g, attG}); err != nil {
		t.Fatal(err)
	}
	rows := keptRows(t, b, "gina")
	if len(rows) != MaxEvidencePerHandle || !slices.Contains(rows, g.ID) || !slices.Contains(rows, attG.ID) {
		t.Fatalf("%d rows, gina's claim kept %v, attestation kept %v", len(rows),
			slices.Contains(rows, g.ID), slices.Contains(rows, attG.ID))
	}
	// The two made room are of the oldest verdict.
	gone := 0
	for _, e := range old {
		if !slices.Contains(rows, e.ID) {
			gone++
			if !slices.Contains(ids(old[:MaxEvidencePerHandle/2]), e.ID) {
				t.Fatalf("row %s of the newer verdict made room", e.ID)
			}
		}
	}
	if gone != 2 {
		t.Fatalf("%d rows made room, want 2", gone)
	}
	claims, atts, err := b.Evidence(ctx, Query{PubKey: gina.PublicKey()})
	if err != nil || len(atts) != 1 || atts[0].Event.ID != attG.ID || !slices.ContainsFunc(claims, func(e *nostr.Event) bool { return e.ID == g.ID }) {
		t.Fatalf("evidence by key: %d claims, %d attestations, %v", len(claims), len(atts), err)
	}
	// Keeping it again changes nothing, not even when it was kept.
	now = now.Add(time.Hour)
	if err := b.KeepEvidence(ctx, "gina", []*nostr.Event{g, attG}); err != nil {
		t.Fatal(err)
	}
	if again := keptRows(t, b, "gina"); !slices.Equal(again, rows) {
		t.Fatal("keeping kept evidence again changed the rows")
	}
}

// The node's own store can hold any number of attested claims of a
// handle: with anchor.accept-others, anyone can have the node anchor (and
// attest) later claims of it. Verify checks at most Options.MaxProofs
// attestations from relays, but every local one (Attestation.Local, set by
// BatcherSource), so DefaultMaxProofs such claims of @gina neither crowd
// out the evidence kept for Gina, anchored earlier by another node, nor
// the same evidence served by a relay. BatcherSource used to return the
// store before the kept evidence, all counted against MaxProofs: the
// flooder became VERIFIED.
func TestNodesOwnFloodCannotCrowdOutKeptEvidence(t *testing.T) {
	ctx := context.Background()
	b, err := Open(ctx, Config{Path: filepath.Join(t.TempDir(), "anchor.db"), Wallet: noWallet{}, Chain: &oneBlockChain{}, Signer: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	gina, mallory, attestor := newKey(t), newKey(t), newKey(t)
	g := claim(t, gina, "gina")
	chainG, attG := attested(t, attestor, g, 100) // anchored by another node

	// Mallory submits DefaultMaxProofs claims of @gina to the open relay;
	// this node anchors them (later) and attests them.
	var flood []*nostr.Event
	for i := range DefaultMaxProofs {
		e, err := identity.NewClaim(mallory, identity.ClaimParams{Handle: "gina", CreatedAt: time.Unix(1_800_000_000+int64(i), 0)})
		if err != nil {
			t.Fatal(err)
		}
		flood = append(flood, e)
	}
	if _, err := b.SubmitMany(ctx, flood); err != nil {
		t.Fatal(err)
	}
	fatts, chainM := anchorOffline(t, flood, 200, 6)
	res, err := b.db.ExecContext(ctx, `INSERT INTO batches (root, leaf_count, state, created_at, scan_height, txid, raw_tx, fee, broadcast_at)
		VALUES (?, ?, 'attested', 0, 0, 'x', x'00', 0, 0)`, []byte("root"), len(flood))
	if err != nil {
		t.Fatal(err)
	}
	batchID, _ := res.LastInsertId()
	for _, a := range fatts {
		evt, err := NewAttestationEvent(attestor, a.Claim, a.Proof, nostr.Now())
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := evt.MarshalJSON()
		if _, err := b.db.ExecContext(ctx, `INSERT INTO attestations (claim_id, batch_id, event) VALUES (?, ?, ?)`, a.Claim.ID, batchID, string(raw)); err != nil {
			t.Fatal(err)
		}
	}
	// An earlier verification kept Gina's evidence.
	if err := b.KeepEvidence(ctx, "gina", []*nostr.Event{g, attG}); err != nil {
		t.Fatal(err)
	}
	vf := &Verifier{Chain: mergeChains(chainG, chainM), Sources: []Source{BatcherSource(b)}, CacheTTL: -1}
	v, err := vf.Check(ctx, Query{Handle: "gina"})
	if err != nil {
		t.Fatal(err)
	}
	if v.Status != Verified || v.PubKey != gina.PublicKey() {
		t.Fatalf("kept evidence of the earliest anchored claim was not checked: %s", v)
	}

	// Nothing kept yet, Gina's claim and attestation on a relay only: the
	// node's own attestations do not use up the relays' budget either.
	if _, err := b.db.ExecContext(ctx, `DELETE FROM evidence`); err != nil {
		t.Fatal(err)
	}
	rl := relaytest.Start(t, relaytest.Options{Open: true})
	for _, e := range []*nostr.Event{g, attG} {
		if err := rl.Store.Save(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	vf.Relays = []string{rl.URL}
	v, err = vf.Check(ctx, Query{Handle: "gina"})
	if err != nil || v.Status != Verified || v.PubKey != gina.PublicKey() {
		t.Fatalf("the relay's attestation of the earliest anchored claim was not checked: %s %v", v, err)
	}
}
