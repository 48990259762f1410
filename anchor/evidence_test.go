package anchor

import (
	"context"
	"maps"
	"path/filepath"
	"testing"
	"time"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/nbd-wtf/go-nostr"

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
	kept := map[string]bool{}
	for _, e := range v.Evidence() {
		kept[e.ID] = true
	}
	if !kept[g.ID] || !kept[attG.ID] || !kept[attM.ID] || len(kept) != 3 {
		t.Fatalf("evidence %v: want gina's claim and both attestations", kept)
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
	if v, _ := vf.Check(ctx, Query{Handle: "gina", PubKey: mallory.PublicKey()}); v.Status != Conflict || v.Holder.PubKey != gina.PublicKey() {
		t.Fatalf("mallory after the flood: %s", v)
	}
	// Kept once: checking again adds no rows.
	var n int
	if err := b.db.QueryRow(`SELECT count(*) FROM evidence`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("%d evidence rows (%v), want 3", n, err)
	}
}
