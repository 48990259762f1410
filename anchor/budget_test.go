package anchor

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/nbd-wtf/go-nostr"
)

// countingChain counts the calls that reach the chain source.
type countingChain struct {
	ChainSource
	headers, hashes atomic.Int32
	fail            error // when set, BlockHeader fails with it
}

func (c *countingChain) BlockHeader(ctx context.Context, h *chainhash.Hash) (*wire.BlockHeader, error) {
	c.headers.Add(1)
	if c.fail != nil {
		return nil, c.fail
	}
	return c.ChainSource.BlockHeader(ctx, h)
}

func (c *countingChain) BlockHash(ctx context.Context, height int32) (*chainhash.Hash, error) {
	c.hashes.Add(1)
	return c.ChainSource.BlockHash(ctx, height)
}

// A "no such block" answer is asked once per verification; a failing
// chain source is asked again.
func TestMemoChainRemembersMissingBlocks(t *testing.T) {
	ctx := context.Background()
	_, chain := anchorOffline(t, []*nostr.Event{claim(t, newKey(t), "memo")}, 100, 6)
	src := &countingChain{ChainSource: chain}
	m := NewMemoChain(src)
	junk := chainhash.Hash{0xee}
	for range 3 {
		if _, err := m.BlockHeader(ctx, &junk); !errors.Is(err, ErrNotInChain) {
			t.Fatalf("junk block: %v", err)
		}
		if _, err := m.BlockHash(ctx, 5000); !errors.Is(err, ErrNotInChain) {
			t.Fatalf("no block at 5000: %v", err)
		}
	}
	if src.headers.Load() != 1 || src.hashes.Load() != 1 {
		t.Fatalf("chain source asked %d headers, %d hashes; want 1 each", src.headers.Load(), src.hashes.Load())
	}
	src.fail = errors.New("btcd: connection refused")
	m = NewMemoChain(src)
	for range 2 {
		_, _ = m.BlockHeader(ctx, &junk)
	}
	if src.headers.Load() != 3 {
		t.Fatalf("a failing source was asked %d times in all, want 3", src.headers.Load())
	}
}

// Attestations whose proofs pass every offline check but name made-up
// blocks cost a chain call each: one verification checks at most
// MaxProofs of them, in the order given.
func TestVerifyBoundsProofChecks(t *testing.T) {
	ctx := context.Background()
	k := newKey(t)
	c := claim(t, k, "busy")
	atts, chain := anchorOffline(t, []*nostr.Event{c}, 100, 6)
	genuine := atts[0]
	var junk []*Attestation
	for i := range 50 {
		p := *genuine.Proof
		p.BlockHash = chainhash.Hash{0xbb, byte(i)}
		junk = append(junk, &Attestation{Claim: c, Proof: &p})
	}
	src := &countingChain{ChainSource: chain}
	v, err := Verify(ctx, src, Query{Handle: "busy"}, nil, append(junk, genuine), Options{MaxProofs: 10})
	if err != nil || v.Status != Invalid || !strings.Contains(v.Reason, "unknown to the chain source") {
		t.Fatalf("genuine proof after the budget: %s %v", v, err)
	}
	if n := src.headers.Load(); n != 10 {
		t.Fatalf("%d header lookups, want 10", n)
	}
	v, err = Verify(ctx, chain, Query{Handle: "busy"}, nil, append([]*Attestation{genuine}, junk...), Options{MaxProofs: 10})
	if err != nil || v.Status != Verified || v.PubKey != k.PublicKey() {
		t.Fatalf("genuine proof first: %s %v", v, err)
	}
}

// Attestations left unchecked (beyond MaxProofs) may anchor an earlier
// claim: Gina's claim of @gina is anchored at 100, Mallory's at 200, and
// junk attestations naming made-up blocks come first (relays serve them
// in any order). Verify used to decide on the checked ones alone and
// named Mallory VERIFIED; now it names nobody (INCOMPLETE).
func TestUncheckedAttestationsNameNoHolder(t *testing.T) {
	ctx := context.Background()
	gina, mallory := newKey(t), newKey(t)
	g, m := claim(t, gina, "gina"), claim(t, mallory, "gina")
	attG, chainG := anchorOffline(t, []*nostr.Event{g}, 100, 8)
	attM, chainM := anchorOffline(t, []*nostr.Event{m}, 200, 6)
	chain := mergeChains(chainG, chainM)
	var junk []*Attestation
	for i := range 5 {
		j := claim(t, newKey(t), "gina")
		ja, _ := anchorOffline(t, []*nostr.Event{j}, 50, 6)
		ja[0].Proof.BlockHash = chainhash.Hash{0xbb, byte(i)}
		junk = append(junk, ja[0])
	}
	atts := append(append(attM, junk...), attG...)
	for _, q := range []Query{{Handle: "gina"}, {Handle: "gina", PubKey: mallory.PublicKey()}, {PubKey: mallory.PublicKey()}} {
		v, err := Verify(ctx, chain, q, []*nostr.Event{g, m}, atts, Options{MaxProofs: 4})
		if err != nil || v.Status != Incomplete || v.Holder != nil || len(v.Evidence()) != 0 || !strings.Contains(v.Reason, "not checked") {
			t.Fatalf("%+v: %s %v, want INCOMPLETE: the unchecked attestations may anchor an earlier claim", q, v, err)
		}
	}
	// Everything checked: Gina.
	v, err := Verify(ctx, chain, Query{Handle: "gina"}, []*nostr.Event{g, m}, atts, Options{})
	if err != nil || v.Status != Verified || v.PubKey != gina.PublicKey() {
		t.Fatalf("all checked: %s %v", v, err)
	}
}
