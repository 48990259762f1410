package node

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/anchor"
	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/internal/relaytest"
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

// A claim revoked by its key and also rotated (before or after the
// revocation) forks the chain, and the node decides it as a verifier does
// (docs/protocol.md, "Deciding a handle", step 4): by anchoring, and with
// nothing anchored (or no verifier) nobody holds the handle, so the node
// neither serves it nor revokes it. ownChain used to ignore the earlier
// claim's revocation and hand the handle to the rotation's key.
func TestOwnChainRevokedThenRotated(t *testing.T) {
	ctx := context.Background()
	k1, k2 := newKey(t), newKey(t)
	at := time.Now().Add(-time.Hour)
	first, err := identity.NewClaim(k1, identity.ClaimParams{Handle: "dave", CreatedAt: at})
	if err != nil {
		t.Fatal(err)
	}
	c1 := mustClaim(t, first)
	rev, err := identity.NewRevocation(k1, c1, "key stolen", at.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	rot, err := identity.Rotate(k1, k2, c1, identity.ClaimParams{Handle: "dave", CreatedAt: at.Add(2 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	// setup stores the three events and anchors blocks[i] at height 100+i.
	setup := func(t *testing.T, blocks ...[]*nostr.Event) (n1, n2 *Node) {
		st := tempStore(t)
		for _, evt := range []*nostr.Event{first, rev, rot} {
			if err := st.Save(ctx, evt); err != nil {
				t.Fatal(err)
			}
		}
		var vf *anchor.Verifier
		if blocks != nil {
			chain := &memChain{headers: map[chainhash.Hash]*wire.BlockHeader{}, byH: map[int32]chainhash.Hash{}}
			var atts []*anchor.Attestation
			for i, evts := range blocks {
				atts = append(atts, chain.anchor(t, int32(100+i), evts...)...)
			}
			chain.best = 200
			vf = &anchor.Verifier{Chain: chain, CacheTTL: -1, Options: anchor.Options{MinConfirmations: 1},
				Sources: []anchor.Source{func(ctx context.Context, q anchor.Query) ([]*nostr.Event, []*anchor.Attestation, error) {
					evts, err := st.Query(ctx, nostr.Filter{Kinds: []int{identity.KindHandleClaim, identity.KindHandleRevocation}, Tags: nostr.TagMap{"n": {q.Handle}}}, storage.Visibility{})
					return evts, atts, err
				}}}
		}
		node := func(k *identity.Key) *Node {
			return &Node{store: st, key: k, freshVerifier: vf, cfg: &Config{Handle: "dave"}, log: slog.New(slog.DiscardHandler)}
		}
		return node(k1), node(k2)
	}

	t.Run("no verifier", func(t *testing.T) {
		n1, n2 := setup(t)
		for _, n := range []*Node{n1, n2} {
			_, err := n.ownChain(ctx, "dave")
			var fork *forkError
			if !errors.As(err, &fork) || !isChainError(err) || fork.claim != c1.ID {
				t.Fatalf("ownChain: %v, want a fork at %s", err, c1.ID)
			}
			if _, serve, err := n.handleClaim(ctx); serve || err != nil {
				t.Errorf("serves the forked handle: %v %v", serve, err)
			}
			var refused errRevoke
			if _, err := n.revoke(ctx, ""); !errors.As(err, &refused) || !strings.Contains(err.Error(), "forks at claim "+c1.ID) {
				t.Errorf("revoke: %v, want a refusal naming the fork", err)
			}
		}
	})
	t.Run("nothing anchored but the first claim", func(t *testing.T) {
		_, n2 := setup(t, []*nostr.Event{first})
		_, err := n2.ownChain(ctx, "dave")
		var fork *forkError
		if !errors.As(err, &fork) || !strings.Contains(err.Error(), "INVALID") {
			t.Fatalf("ownChain: %v, want a fork the verifier calls INVALID", err)
		}
	})
	t.Run("revocation anchored first", func(t *testing.T) {
		n1, n2 := setup(t, []*nostr.Event{first}, []*nostr.Event{rev}, []*nostr.Event{rot})
		for _, n := range []*Node{n1, n2} {
			s, err := n.ownChain(ctx, "dave")
			if err != nil || !s.Revoked || s.Revocation.ID != rev.ID || s.Current.ID != c1.ID {
				t.Fatalf("ownChain: %+v %v, want revoked by %s", s, err, rev.ID)
			}
			if _, serve, err := n.handleClaim(ctx); serve || err != nil {
				t.Errorf("serves the revoked handle: %v %v", serve, err)
			}
		}
	})
	t.Run("rotation anchored first", func(t *testing.T) {
		n1, n2 := setup(t, []*nostr.Event{first}, []*nostr.Event{rot, rev})
		for _, n := range []*Node{n1, n2} {
			s, err := n.ownChain(ctx, "dave")
			if err != nil || s.Revoked || s.Current.ID != rot.ID {
				t.Fatalf("ownChain: %+v %v, want held by the rotation %s", s, err, rot.ID)
			}
		}
		if _, serve, err := n2.handleClaim(ctx); !serve || err != nil {
			t.Errorf("the rotation's key does not serve the handle: %v %v", serve, err)
		}
	})
}

func newKey(t *testing.T) *identity.Key {
	t.Helper()
	k, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustClaim(t *testing.T, evt *nostr.Event) *identity.Claim {
	t.Helper()
	c, err := identity.ValidateClaim(evt)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// memChain is an in-memory anchor.ChainSource.
type memChain struct {
	headers map[chainhash.Hash]*wire.BlockHeader
	byH     map[int32]chainhash.Hash
	best    int32
}

func (m *memChain) BlockHeader(_ context.Context, h *chainhash.Hash) (*wire.BlockHeader, error) {
	if hd := m.headers[*h]; hd != nil {
		return hd, nil
	}
	return nil, fmt.Errorf("no block %s: %w", h, anchor.ErrNotInChain)
}

func (m *memChain) BlockHash(_ context.Context, height int32) (*chainhash.Hash, error) {
	if h, ok := m.byH[height]; ok {
		return &h, nil
	}
	return nil, fmt.Errorf("no block at %d: %w", height, anchor.ErrNotInChain)
}

func (m *memChain) BestHeight(context.Context) (int32, error) { return m.best, nil }

// anchor commits evts, in this order, in one anchor transaction at position
// 1 of a block at height, and returns their attestations.
func (m *memChain) anchor(t *testing.T, height int32, evts ...*nostr.Event) []*anchor.Attestation {
	t.Helper()
	ids := make([][32]byte, len(evts))
	for i, e := range evts {
		if _, err := hex.Decode(ids[i][:], []byte(e.ID)); err != nil {
			t.Fatal(err)
		}
	}
	tree, err := anchor.NewTree(ids)
	if err != nil {
		t.Fatal(err)
	}
	coinbase := wire.NewMsgTx(1)
	coinbase.AddTxIn(wire.NewTxIn(&wire.OutPoint{Index: wire.MaxPrevOutIndex}, []byte{0x03, byte(height), byte(height >> 8), 0}, nil))
	coinbase.AddTxOut(wire.NewTxOut(1, []byte{0x51}))
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{Hash: chainhash.Hash{byte(height)}}, nil, nil))
	tx.AddTxOut(wire.NewTxOut(0, append([]byte{0x6a, byte(anchor.PayloadLen)}, anchor.Payload(tree.Root())...)))
	txids := []chainhash.Hash{coinbase.TxHash(), tx.TxHash()}
	hdr := wire.BlockHeader{Version: 0x20000000, MerkleRoot: anchor.TxMerkleRoot(txids), Bits: 0x207fffff, Timestamp: time.Unix(1767484800+int64(height), 0)}
	h := hdr.BlockHash()
	m.headers[h], m.byH[height] = &hdr, h
	branch, err := anchor.BuildTxBranch(txids, 1)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := anchor.StrippedTx(tx)
	if err != nil {
		t.Fatal(err)
	}
	atts := make([]*anchor.Attestation, len(evts))
	for i, e := range evts {
		atts[i] = &anchor.Attestation{Claim: e, Local: true, Proof: &anchor.Proof{ClaimID: ids[i], LeafIndex: uint32(i), LeafCount: uint32(len(evts)),
			Path: tree.Path(i), Txid: txids[1], RawTx: raw, TxIndex: 1, Branch: branch, BlockHash: h, Height: uint32(height)}}
	}
	return atts
}

// A key that got its handle by rotation, on a node whose store lacks the
// earlier claims (set up afresh with the new key, or a lost store), copies
// them from its publish relays, with their revocations, and then serves the
// handle; if no relay has them, it says which claim is missing and what to
// do. It used to give up with "which this node does not have", and with
// not even the rotation stored, it signed a new first claim.
func TestOwnChainFetchesEarlierClaims(t *testing.T) {
	ctx := context.Background()
	k1, k2, k3 := newKey(t), newKey(t), newKey(t)
	at := time.Now().Add(-time.Hour)
	first, err := identity.NewClaim(k1, identity.ClaimParams{Handle: "dave", CreatedAt: at})
	if err != nil {
		t.Fatal(err)
	}
	rot1, err := identity.Rotate(k1, k2, mustClaim(t, first), identity.ClaimParams{Handle: "dave", CreatedAt: at.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	rot2, err := identity.Rotate(k2, k3, mustClaim(t, rot1), identity.ClaimParams{Handle: "dave", CreatedAt: at.Add(2 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	// The node of k3 has only its own claim, the rotation to it.
	nodeOf := func(t *testing.T, relays ...string) *Node {
		st := tempStore(t)
		if err := st.Save(ctx, rot2); err != nil {
			t.Fatal(err)
		}
		return &Node{store: st, key: k3, cfg: &Config{Handle: "dave", PublishRelays: relays}, log: slog.New(slog.DiscardHandler)}
	}
	relayWith := func(t *testing.T, evts ...*nostr.Event) string {
		r := relaytest.Start(t, relaytest.Options{Open: true})
		for _, evt := range evts {
			if err := r.Store.Save(ctx, evt); err != nil {
				t.Fatal(err)
			}
		}
		return r.URL
	}
	missing := func(t *testing.T, n *Node, want ...string) {
		t.Helper()
		_, err := n.ownChain(ctx, "dave")
		var me *missingClaimError
		if !errors.As(err, &me) || !isChainError(err) {
			t.Fatalf("ownChain: %v, want a missing claim", err)
		}
		if _, serve, err := n.handleClaim(ctx); serve || err != nil {
			t.Errorf("serves the handle without its chain: %v %v", serve, err)
		}
		var refused errRevoke
		_, err = n.revoke(ctx, "")
		if !errors.As(err, &refused) {
			t.Fatalf("revoke: %v, want a refusal", err)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("revoke: %q does not say %q", err, w)
			}
		}
	}

	t.Run("found on the second relay", func(t *testing.T) {
		// The first relay has only the middle claim, the second all.
		n := nodeOf(t, "ws://127.0.0.1:1", relayWith(t, rot1), relayWith(t, first, rot1))
		s, err := n.ownChain(ctx, "dave")
		if err != nil || s.Genesis.ID != first.ID || s.Current.ID != rot2.ID || len(s.Claims) != 3 || s.Revoked {
			t.Fatalf("ownChain: %+v %v", s, err)
		}
		if _, serve, err := n.handleClaim(ctx); !serve || err != nil {
			t.Errorf("does not serve the handle: %v %v", serve, err)
		}
		// Copied: the relays are not needed any more.
		n.cfg.PublishRelays = nil
		if s, err := n.ownChain(ctx, "dave"); err != nil || s.Genesis.ID != first.ID {
			t.Fatalf("ownChain from the store alone: %+v %v", s, err)
		}
	})
	t.Run("not even its own claim stored", func(t *testing.T) {
		n := &Node{store: tempStore(t), key: k3, cfg: &Config{Handle: "dave", DMRelays: []string{"wss://dave.example"}, PublishRelays: []string{relayWith(t, first, rot1, rot2)}}, log: slog.New(slog.DiscardHandler)}
		// Not a key that never claimed the handle: no new first claim.
		if claim, serve, err := n.handleClaim(ctx); claim != nil || !serve || err != nil {
			t.Fatalf("handleClaim: %v %v %v, want the rotation's handle served and no new claim", claim, serve, err)
		}
		if s, err := n.ownChain(ctx, "dave"); err != nil || s.Genesis.ID != first.ID || s.Current.ID != rot2.ID {
			t.Fatalf("ownChain: %+v %v", s, err)
		}
	})
	t.Run("its own revocation, with nothing stored", func(t *testing.T) {
		// A lost store: the key's claim came back from the relays, and
		// so must its revocation, or the node serves a revoked handle.
		rev, err := identity.NewRevocation(k3, mustClaim(t, rot2), "retired", at.Add(3*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		n := &Node{store: tempStore(t), key: k3, cfg: &Config{Handle: "dave", PublishRelays: []string{relayWith(t, first, rot1, rot2, rev)}}, log: slog.New(slog.DiscardHandler)}
		if claim, serve, err := n.handleClaim(ctx); claim != nil || serve || err != nil {
			t.Fatalf("handleClaim: %v %v %v, want the revoked handle neither claimed nor served", claim, serve, err)
		}
		if s, err := n.ownChain(ctx, "dave"); err != nil || !s.Revoked || s.Revocation.ID != rev.ID {
			t.Fatalf("ownChain: %+v %v, want revoked by %s", s, err, rev.ID)
		}
	})
	t.Run("with a revocation that forks the chain", func(t *testing.T) {
		rev, err := identity.NewRevocation(k1, mustClaim(t, first), "stolen", at.Add(30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := nodeOf(t, relayWith(t, first, rot1, rev))
		var fork *forkError
		if _, err := n.ownChain(ctx, "dave"); !errors.As(err, &fork) || fork.claim != first.ID {
			t.Fatalf("ownChain: %v, want the fork at the first claim", err)
		}
	})
	t.Run("no relay has it", func(t *testing.T) {
		url := relayWith(t, first)
		missing(t, nodeOf(t, url), rot2.ID, rot1.ID, url, "add to publish-relays a relay holding the handle's earlier claims")
	})
	t.Run("no publish relays", func(t *testing.T) {
		missing(t, nodeOf(t), rot1.ID, "no publish-relays", "set publish-relays")
	})
}
