package anchor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/internal/nostrclient"
	"github.com/anchorchat/anchorchat/regtest"
	"github.com/anchorchat/anchorchat/relay"
	"github.com/anchorchat/anchorchat/storage"
	"github.com/anchorchat/anchorchat/wallet"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/nbd-wtf/go-nostr"
)

type rt struct {
	t      *testing.T
	ctx    context.Context
	net    *regtest.Network
	chain  *BtcdChain
	wchain wallet.Chain
	signer *identity.Key
}

func (r *rt) batcher(path string, conf int32, mod func(*Config)) *Batcher {
	r.t.Helper()
	cfg := Config{Path: path, Wallet: r.net.Wallet, Chain: r.wchain, Signer: r.signer, Confirmations: conf,
		Interval: time.Hour, BumpAfter: time.Hour}
	if mod != nil {
		mod(&cfg)
	}
	b, err := Open(r.ctx, cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}

func (r *rt) mine(k int) {
	r.t.Helper()
	if _, err := r.net.Mine(r.ctx, k); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rt) tick(b *Batcher) {
	r.t.Helper()
	if err := b.Tick(r.ctx); err != nil {
		r.t.Fatal(err)
	}
}

func newKey(t *testing.T) *identity.Key {
	t.Helper()
	k, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func claim(t *testing.T, k *identity.Key, handle string) *nostr.Event {
	t.Helper()
	e, err := identity.NewClaim(k, identity.ClaimParams{Handle: handle})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func mustClaim(t *testing.T, e *nostr.Event) *identity.Claim {
	t.Helper()
	c, err := identity.ValidateClaim(e)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// evidence returns what the batcher holds for handle, parsed.
func (r *rt) evidence(b *Batcher, handle string) ([]*nostr.Event, []*Attestation) {
	r.t.Helper()
	claims, attEvts, err := b.Attestations(r.ctx, handle)
	if err != nil {
		r.t.Fatal(err)
	}
	atts, errs := ParseAttestations(attEvts)
	if len(errs) > 0 {
		r.t.Fatal(errs)
	}
	return claims, atts
}

func (r *rt) verify(q Query, evts []*nostr.Event, atts []*Attestation, minConf int32) Verdict {
	r.t.Helper()
	v, err := Verify(r.ctx, r.chain, q, evts, atts, Options{MinConfirmations: minConf})
	if err != nil {
		r.t.Fatal(err)
	}
	return v
}

// anchorAndAttest submits evts to b, anchors them, mines one block and
// ticks (b must attest at 1 confirmation).
func (r *rt) anchorAndAttest(b *Batcher, evts ...*nostr.Event) BatchInfo {
	r.t.Helper()
	if _, err := b.SubmitMany(r.ctx, evts); err != nil {
		r.t.Fatal(err)
	}
	bs, err := b.AnchorNow(r.ctx)
	if err != nil || len(bs) != 1 {
		r.t.Fatalf("anchor now: %v %v", bs, err)
	}
	r.mine(1)
	r.tick(b)
	bi, err := b.batchInfo(r.ctx, bs[0].ID)
	if err != nil || bi.State != BatchAttested {
		r.t.Fatalf("batch %+v %v", bi, err)
	}
	return *bi
}

func TestRegtest(t *testing.T) {
	if testing.Short() {
		t.Skip("starts btcd")
	}
	n := regtest.Start(t, regtest.Options{LNDs: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	r := &rt{t: t, ctx: ctx, net: n, chain: NewBtcdChain(n.Btcd), wchain: wallet.NewRPCChain(n.Btcd), signer: newKey(t)}
	if err := n.Wallet.Sync(ctx); err != nil {
		t.Fatal(err)
	}

	t.Run("VerifiedAndPending", func(t *testing.T) {
		r := *r
		r.t = t
		b := r.batcher(t.TempDir()+"/anchor.db", 1, nil)
		defer b.Close()
		alice := newKey(t)
		c := claim(t, alice, "alice")
		bi := r.anchorAndAttest(b, c)
		evts, atts := r.evidence(b, "alice")
		if len(atts) != 1 {
			t.Fatalf("%d attestations", len(atts))
		}
		v := r.verify(Query{Handle: "alice"}, evts, atts, 3)
		if v.Status != Pending || v.Confirmations != 1 || v.PubKey != alice.PublicKey() {
			t.Fatalf("want PENDING 1/3: %s", v)
		}
		r.mine(2)
		v = r.verify(Query{Handle: "alice", PubKey: alice.PublicKey()}, evts, atts, 3)
		if v.Status != Verified || v.Confirmations != 3 || v.Height != bi.Height || v.PubKey != alice.PublicKey() || v.ClaimID != c.ID {
			t.Fatalf("want VERIFIED: %s", v)
		}
		js, _ := json.Marshal(v)
		t.Logf("%s\n%s", v, js)
		if v := r.verify(Query{Handle: "nobody"}, evts, atts, 3); v.Status != Unanchored {
			t.Fatalf("unknown handle: %s", v)
		}
		// A claim that was never anchored.
		u := claim(t, newKey(t), "unanchored")
		if v := r.verify(Query{Handle: "unanchored"}, []*nostr.Event{u}, nil, 1); v.Status != Unanchored {
			t.Fatalf("want UNANCHORED: %s", v)
		}
	})

	t.Run("Batch1000AndTamper", func(t *testing.T) {
		r := *r
		r.t = t
		b := r.batcher(t.TempDir()+"/anchor.db", 1, nil)
		defer b.Close()
		var evts []*nostr.Event
		for i := 0; i < 1000; i++ {
			evts = append(evts, claim(t, newKey(t), fmt.Sprintf("user%d", i)))
		}
		bi := r.anchorAndAttest(b, evts...)
		if bi.Claims != 1000 {
			t.Fatalf("batch %+v", bi)
		}
		_, atts := r.evidence(b, "")
		if len(atts) != 1000 {
			t.Fatalf("%d attestations", len(atts))
		}
		start := time.Now()
		memo := NewMemoChain(r.chain)
		for _, a := range atts {
			an, err := VerifyProof(ctx, memo, a.Claim, a.Proof)
			if err != nil {
				t.Fatal(err)
			}
			if an.Txid != bi.Txid || an.LeafCount != 1000 || an.Height != bi.Height {
				t.Fatalf("anchored %+v, batch %+v", an, bi)
			}
		}
		t.Logf("1000 proofs verified against btcd in %v (one tx %s at height %d)", time.Since(start), bi.Txid, bi.Height)
		blk, err := r.wchain.Block(ctx, mustHash(t, bi.BlockHash))
		if err != nil {
			t.Fatal(err)
		}
		anchors := 0
		for _, tx := range blk.Transactions {
			if _, err := TxRoot(tx); err == nil {
				anchors++
			}
		}
		if anchors != 1 {
			t.Fatalf("%d anchor txs in the block", anchors)
		}

		a := atts[537]
		q := Query{Handle: mustClaim(t, a.Claim).Handle, PubKey: a.Claim.PubKey}
		other := atts[538]
		cases := []struct {
			name, step string
			mod        func(c *nostr.Event, p *Proof)
		}{
			{"path hash", StepMerklePath, func(c *nostr.Event, p *Proof) { p.Path[3].Hash[0] ^= 1 }},
			{"sibling order", StepMerklePath, func(c *nostr.Event, p *Proof) { p.Path[0].Left = !p.Path[0].Left }},
			{"sibling swap", StepMerklePath, func(c *nostr.Event, p *Proof) { p.Path[1], p.Path[2] = p.Path[2], p.Path[1] }},
			{"leaf index", StepMerklePath, func(c *nostr.Event, p *Proof) { p.LeafIndex ^= 2 }},
			{"leaf count", StepMerklePath, func(c *nostr.Event, p *Proof) { p.LeafCount++ }},
			{"raw tx", StepAnchorTx, func(c *nostr.Event, p *Proof) { p.RawTx[len(p.RawTx)-5] ^= 1 }},
			{"txid", StepTxBranch, func(c *nostr.Event, p *Proof) {
				// raw tx and txid altered together: the branch no longer leads to the header.
				p.RawTx[0] ^= 1
				tx, _ := parseRawTx(p.RawTx)
				p.Txid = tx.TxHash()
			}},
			{"branch", StepTxBranch, func(c *nostr.Event, p *Proof) { p.Branch[0][5] ^= 1 }},
			{"tx position", StepTxBranch, func(c *nostr.Event, p *Proof) { p.TxIndex ^= 1 }},
			{"block hash", StepBlockHash, func(c *nostr.Event, p *Proof) { p.BlockHash[0] ^= 1 }},
			{"height", StepHeight, func(c *nostr.Event, p *Proof) { p.Height-- }},
			{"claim content", StepClaim, func(c *nostr.Event, p *Proof) { c.Tags[0][1] = "mallory" }},
			{"signature", StepClaimSignature, func(c *nostr.Event, p *Proof) { c.Sig = c.Sig[:10] + flipHex(c.Sig[10]) + c.Sig[11:] }},
			{"other claim", StepClaimID, func(c *nostr.Event, p *Proof) { *c = *other.Claim }},
		}
		for _, tc := range cases {
			c := *a.Claim
			c.Tags = nostr.Tags{append(nostr.Tag(nil), a.Claim.Tags[0]...)}
			c.Tags = append(c.Tags, a.Claim.Tags[1:]...)
			bin, _ := a.Proof.MarshalBinary()
			p := new(Proof)
			if err := p.UnmarshalBinary(bin); err != nil {
				t.Fatal(err)
			}
			tc.mod(&c, p)
			_, err := VerifyProof(ctx, r.chain, &c, p)
			var pe *ProofError
			if !errors.As(err, &pe) || pe.Step != tc.step {
				t.Errorf("%s: want step %q, got %v", tc.name, tc.step, err)
				continue
			}
			if tc.step == StepClaimID {
				continue // a different handle: the verdict is about user538
			}
			v := r.verify(q, []*nostr.Event{&c}, []*Attestation{{Claim: &c, Proof: p}}, 1)
			if v.Status != Invalid || !strings.Contains(v.Reason, tc.step+":") {
				t.Errorf("%s: verdict %s", tc.name, v)
			}
			if tc.name != "claim content" {
				if v := r.verify(Query{Handle: q.Handle}, nil, []*Attestation{{Claim: &c, Proof: p}}, 1); v.Status != Invalid {
					t.Errorf("%s, by handle only: verdict %s", tc.name, v)
				}
			}
			t.Logf("%-13s -> %s", tc.name, v.Reason)
		}
		// The untouched one still verifies.
		if v := r.verify(q, nil, []*Attestation{a}, 1); v.Status != Verified {
			t.Fatalf("untampered: %s", v)
		}
	})

	t.Run("ConflictRotationRevocation", func(t *testing.T) {
		r := *r
		r.t = t
		b := r.batcher(t.TempDir()+"/anchor.db", 1, nil)
		defer b.Close()
		bob, dave := newKey(t), newKey(t)
		first := claim(t, bob, "carol")
		r.anchorAndAttest(b, first)
		later := claim(t, dave, "carol")
		r.anchorAndAttest(b, later)
		evts, atts := r.evidence(b, "carol")
		if len(atts) != 2 {
			t.Fatalf("%d attestations", len(atts))
		}
		if v := r.verify(Query{Handle: "carol"}, evts, atts, 1); v.Status != Verified || v.PubKey != bob.PublicKey() {
			t.Fatalf("earliest should hold: %s", v)
		}
		v := r.verify(Query{Handle: "carol", PubKey: dave.PublicKey()}, evts, atts, 1)
		if v.Status != Conflict || v.Holder.PubKey != bob.PublicKey() {
			t.Fatalf("want CONFLICT held by bob: %s", v)
		}
		t.Logf("%s", v)

		// Rotation bob -> erin, signed with bob's consent.
		erin := newKey(t)
		rot, err := identity.Rotate(bob, erin, mustClaim(t, first), identity.ClaimParams{})
		if err != nil {
			t.Fatal(err)
		}
		// Forged rotation bob -> mallory: consent signed by mallory, not bob.
		mallory := newKey(t)
		fc, err := identity.SignRotationConsent(mallory, "carol", first.ID, mallory.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		forged, err := identity.NewRotation(mallory, mustClaim(t, first), fc, identity.ClaimParams{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Submit(ctx, forged); !errors.Is(err, identity.ErrBadConsent) {
			t.Fatalf("batcher took a forged rotation: %v", err)
		}
		if _, err := b.Submit(ctx, rot); err != nil {
			t.Fatal(err)
		}
		all := append(append([]*nostr.Event(nil), evts...), rot, forged)
		// Signed, not yet anchored: erin holds the handle, but bob could
		// still sign and anchor another successor first.
		if v := r.verify(Query{Handle: "carol"}, all, atts, 1); v.Status != Pending || v.PubKey != erin.PublicKey() || !strings.Contains(v.Reason, "not anchored yet") {
			t.Fatalf("unanchored rotation: %s", v)
		}
		r.anchorAndAttest(b) // the rotation is pending in the batcher
		evts, atts = r.evidence(b, "carol")
		all = append(append([]*nostr.Event(nil), evts...), forged)
		if v := r.verify(Query{Handle: "carol"}, all, atts, 1); v.Status != Verified || v.PubKey != erin.PublicKey() {
			t.Fatalf("rotation not applied: %s", v)
		}
		v = r.verify(Query{Handle: "carol", PubKey: mallory.PublicKey()}, all, atts, 1)
		if v.Status != Conflict || v.Holder.PubKey != erin.PublicKey() || !strings.Contains(v.Reason, "consent") {
			t.Fatalf("forged rotation: %s", v)
		}
		t.Logf("forged: %s", v)
		if v := r.verify(Query{Handle: "carol", PubKey: bob.PublicKey()}, all, atts, 1); v.Status != Conflict {
			t.Fatalf("old key after rotation: %s", v)
		}
		// A revocation by the old key does nothing; by the current key it ends the handle.
		rotC := mustClaim(t, rot)
		oldRev, err := identity.NewRevocation(bob, rotC, "not mine", time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if v := r.verify(Query{Handle: "carol"}, append(all, oldRev), atts, 1); v.Status != Verified || v.PubKey != erin.PublicKey() {
			t.Fatalf("revocation by old key took effect: %s", v)
		}
		rev, err := identity.NewRevocation(erin, rotC, "retired", time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Submit(ctx, rev); err != nil {
			t.Fatal(err)
		}
		r.anchorAndAttest(b) // the revocation gets anchored too
		evts2, atts2 := r.evidence(b, "carol")
		v = r.verify(Query{Handle: "carol"}, append(evts2, forged, oldRev), atts2, 1)
		if v.Status != Revoked || !strings.Contains(v.Reason, "retired") {
			t.Fatalf("want REVOKED: %s", v)
		}
		t.Logf("%s", v)
	})

	// A revocation and a rotation of the same claim, both signed by its key,
	// are a fork like two rotations: the one anchored first stands, and with
	// neither anchored the handle is INVALID. (The verifier used to follow
	// the rotation and drop the revocation, so whoever held the revoked key
	// could take the handle back.)
	t.Run("RevocationAndRotationFork", func(t *testing.T) {
		r := *r
		r.t = t
		b := r.batcher(t.TempDir()+"/anchor.db", 1, nil)
		defer b.Close()
		fork := func(handle string) (g, rev, rot *nostr.Event, newKey2 *identity.Key) {
			bob, other := newKey(t), newKey(t)
			g = claim(t, bob, handle)
			r.anchorAndAttest(b, g)
			gc := mustClaim(t, g)
			rev, err := identity.NewRevocation(bob, gc, "key stolen", time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			rot, err = identity.Rotate(bob, other, gc, identity.ClaimParams{})
			if err != nil {
				t.Fatal(err)
			}
			return g, rev, rot, other
		}

		_, rev, rot, thief := fork("frank")
		evts, atts := r.evidence(b, "frank")
		all := append(append([]*nostr.Event(nil), evts...), rev, rot)
		if v := r.verify(Query{Handle: "frank"}, all, atts, 1); v.Status != Invalid || !strings.Contains(v.Reason, "fork") {
			t.Fatalf("revocation and rotation, neither anchored: %s", v)
		}
		if _, err := b.Submit(ctx, rev); err != nil {
			t.Fatal(err)
		}
		r.anchorAndAttest(b)
		evts, atts = r.evidence(b, "frank")
		if v := r.verify(Query{Handle: "frank", PubKey: thief.PublicKey()}, append(evts, rot), atts, 1); v.Status != Revoked {
			t.Fatalf("revocation anchored first: %s", v)
		}

		_, rev, rot, erin := fork("gwen")
		if _, err := b.Submit(ctx, rot); err != nil {
			t.Fatal(err)
		}
		r.anchorAndAttest(b)
		evts, atts = r.evidence(b, "gwen")
		if v := r.verify(Query{Handle: "gwen"}, append(evts, rev), atts, 1); v.Status != Verified || v.PubKey != erin.PublicKey() {
			t.Fatalf("rotation anchored first, a later revocation by the old key: %s", v)
		}
	})

	t.Run("RestartNothingLostNothingTwice", func(t *testing.T) {
		r := *r
		r.t = t
		path := t.TempDir() + "/anchor.db"
		// First life: broadcasts fail (as if the process died right after
		// storing the signed tx).
		b := r.batcher(path, 1, func(c *Config) { c.Chain = failBroadcast{c.Chain} })
		var evts []*nostr.Event
		for i := 0; i < 5; i++ {
			evts = append(evts, claim(t, newKey(t), fmt.Sprintf("restart%d", i)))
		}
		if _, err := b.SubmitMany(ctx, evts[:3]); err != nil {
			t.Fatal(err)
		}
		b.Close()
		b = r.batcher(path, 1, func(c *Config) { c.Chain = failBroadcast{c.Chain} })
		if st, err := b.Status(ctx, evts[2].ID); err != nil || !st.Pending {
			t.Fatalf("claim lost over restart: %+v %v", st, err)
		}
		if _, err := b.AnchorNow(ctx); err != nil {
			t.Fatal(err)
		}
		b.Close()
		// Second life: the claims are in a batch; resubmitting them and new ones.
		b = r.batcher(path, 1, nil)
		defer b.Close()
		if n, err := b.SubmitMany(ctx, evts); err != nil || n != 2 {
			t.Fatalf("resubmit: %d new, %v (want 2)", n, err)
		}
		r.tick(b) // rebroadcasts the stored tx
		r.mine(1)
		r.tick(b)
		bs, _ := b.Batches(ctx)
		if len(bs) != 1 || bs[0].State != BatchAttested || bs[0].Claims != 3 {
			t.Fatalf("batches %+v", bs)
		}
		if _, err := b.AnchorNow(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := b.AnchorNow(ctx); !errors.Is(err, ErrNothingToAnchor) {
			t.Fatalf("second AnchorNow: %v", err)
		}
		r.mine(1)
		r.tick(b)
		b.Close()
		b = r.batcher(path, 1, nil)
		r.tick(b)
		bs, _ = b.Batches(ctx)
		if len(bs) != 2 || bs[1].Claims != 2 || bs[1].State != BatchAttested {
			t.Fatalf("batches %+v", bs)
		}
		_, attEvts, _ := b.Attestations(ctx, "")
		if len(attEvts) != 5 {
			t.Fatalf("%d attestations, want 5", len(attEvts))
		}
		// Each claim exactly once on chain: count anchor payloads per root.
		for _, bi := range bs {
			if c := countPayloads(t, &r, bi.Root); c != 1 {
				t.Fatalf("root %s anchored %d times", bi.Root, c)
			}
		}
	})

	// Two batches whose transactions btcd never heard of (a broadcast that
	// failed, or a btcd restarted without its mempool): the wallet cannot
	// see the first one's spend, yet the second must not spend its coins,
	// or only one of the two could ever confirm. Both are mined once
	// rebroadcast.
	t.Run("UnminedBatchesKeepTheirCoins", func(t *testing.T) {
		r := *r
		r.t = t
		path := t.TempDir() + "/anchor.db"
		b := r.batcher(path, 1, func(c *Config) { c.Chain = failBroadcast{c.Chain} })
		spent := map[wire.OutPoint]int64{}
		for i := range 2 {
			if _, err := b.Submit(ctx, claim(t, newKey(t), fmt.Sprintf("held%d", i))); err != nil {
				t.Fatal(err)
			}
			bs, err := b.AnchorNow(ctx)
			if err != nil || len(bs) != 1 {
				t.Fatalf("batch %d: %+v %v", i, bs, err)
			}
			rows, err := b.loadBatches(ctx, `WHERE id = ?`, bs[0].ID)
			if err != nil || len(rows) != 1 {
				t.Fatalf("batch %d: %v", bs[0].ID, err)
			}
			tx, err := parseTx(rows[0].raw)
			if err != nil {
				t.Fatal(err)
			}
			for _, in := range tx.TxIn {
				if other, ok := spent[in.PreviousOutPoint]; ok {
					t.Fatalf("batches %d and %d both spend %s", other, bs[0].ID, in.PreviousOutPoint)
				}
				spent[in.PreviousOutPoint] = bs[0].ID
			}
		}
		b.Close()
		b = r.batcher(path, 1, nil)
		defer b.Close()
		r.tick(b) // rebroadcasts both
		r.mine(1)
		r.tick(b)
		bs, err := b.Batches(ctx)
		if err != nil || len(bs) != 2 || bs[0].State != BatchAttested || bs[1].State != BatchAttested {
			t.Fatalf("batches %+v %v, want both attested", bs, err)
		}
	})

	t.Run("RBFBump", func(t *testing.T) {
		r := *r
		r.t = t
		b := r.batcher(t.TempDir()+"/anchor.db", 1, func(c *Config) { c.BumpAfter = time.Nanosecond })
		defer b.Close()
		c := claim(t, newKey(t), "stuck")
		if _, err := b.Submit(ctx, c); err != nil {
			t.Fatal(err)
		}
		bs, err := b.AnchorNow(ctx)
		if err != nil {
			t.Fatal(err)
		}
		orig := bs[0]
		time.Sleep(1100 * time.Millisecond)
		r.tick(b) // not mined, waited BumpAfter: replaced
		bi, _ := b.batchInfo(ctx, orig.ID)
		if bi.Bumps != 1 || bi.Txid == orig.Txid || bi.Fee <= orig.Fee {
			t.Fatalf("not bumped: %+v (was %+v)", bi, orig)
		}
		mem, err := n.Btcd.GetRawMempool()
		if err != nil {
			t.Fatal(err)
		}
		var inMem []string
		for _, h := range mem {
			inMem = append(inMem, h.String())
		}
		if !strings.Contains(strings.Join(inMem, " "), bi.Txid) || strings.Contains(strings.Join(inMem, " "), orig.Txid) {
			t.Fatalf("mempool %v: want %s, not %s", inMem, bi.Txid, orig.Txid)
		}
		r.mine(1)
		r.tick(b)
		bi, _ = b.batchInfo(ctx, orig.ID)
		if bi.State != BatchAttested || bi.Txid == orig.Txid || bi.Root != orig.Root {
			t.Fatalf("after mining: %+v", bi)
		}
		evts, atts := r.evidence(b, "stuck")
		if v := r.verify(Query{Handle: "stuck"}, evts, atts, 1); v.Status != Verified || v.Anchor.Txid != bi.Txid {
			t.Fatalf("bumped anchor: %s", v)
		}
		t.Logf("fee %d -> %d sat, txid %s -> %s", orig.Fee, bi.Fee, orig.Txid, bi.Txid)
	})

	t.Run("RelayFetchAndHook", func(t *testing.T) {
		r := *r
		r.t = t
		url := startRelay(t)
		pub, err := nostrclient.Dial(ctx, url, nostrclient.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Close()
		b := r.batcher(t.TempDir()+"/anchor.db", 1, func(c *Config) {
			c.Publish = func(ctx context.Context, evt *nostr.Event) error { return pub.Publish(ctx, evt) }
		})
		defer b.Close()
		gina, hank := newKey(t), newKey(t)
		g, h := claim(t, gina, "gina"), claim(t, hank, "gina")
		for _, e := range []*nostr.Event{g, h} {
			if err := pub.Publish(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
		r.anchorAndAttest(b, g)
		r.anchorAndAttest(b, h)
		vf := &Verifier{Chain: r.chain, Relays: []string{url}, Options: Options{MinConfirmations: 1}, CacheTTL: -1}
		if s := vf.Hook(ctx, gina.PublicKey(), "gina"); s != "VERIFIED" {
			t.Fatalf("hook gina: %s", s)
		}
		if s := vf.Hook(ctx, hank.PublicKey(), "gina"); s != "CONFLICT" {
			t.Fatalf("hook hank: %s", s)
		}
		// By key only: the handle is learnt from the key's claims.
		v, err := vf.Check(ctx, Query{PubKey: gina.PublicKey()})
		if err != nil || v.Status != Verified || v.Handle != "gina" {
			t.Fatalf("by key: %s %v", v, err)
		}
		if s := vf.Hook(ctx, gina.PublicKey(), "nobody"); s != "UNANCHORED" {
			t.Fatalf("hook unknown handle: %s", s)
		}
		bad := &Verifier{Chain: r.chain, Relays: []string{"ws://127.0.0.1:1"}, CacheTTL: -1}
		if s := bad.Hook(ctx, gina.PublicKey(), "gina"); s != "UNKNOWN" {
			t.Fatalf("no relay: %s", s)
		}
	})

	t.Run("Reorg", func(t *testing.T) {
		r := *r
		r.t = t
		b := r.batcher(t.TempDir()+"/anchor.db", 1, nil)
		defer b.Close()
		c := claim(t, newKey(t), "reorged")
		bi := r.anchorAndAttest(b, c)
		evts, atts := r.evidence(b, "reorged")
		h := mustHash(t, bi.BlockHash)
		if err := n.Btcd.InvalidateBlock(h); err != nil {
			t.Skipf("btcd invalidateblock: %v", err)
		}
		v := r.verify(Query{Handle: "reorged"}, evts, atts, 1)
		if v.Status != Invalid || !strings.Contains(v.Reason, StepHeight) {
			t.Fatalf("after reorg: %s", v)
		}
		t.Logf("after reorg: %s", v)
		r.tick(b) // withdraws the attestations
		if bs, _ := b.batchInfo(ctx, bi.ID); bs.State != BatchBroadcast {
			t.Fatalf("batch after reorg: %+v", bs)
		}
		r.mine(2) // the tx is back in the mempool (or rebroadcast) and mined again
		r.tick(b)
		r.tick(b)
		bs, _ := b.batchInfo(ctx, bi.ID)
		if bs.State != BatchAttested || bs.BlockHash == bi.BlockHash {
			t.Fatalf("batch after re-mining: %+v", bs)
		}
		evts, atts = r.evidence(b, "reorged")
		if v := r.verify(Query{Handle: "reorged"}, evts, atts, 1); v.Status != Verified {
			t.Fatalf("after re-anchoring: %s", v)
		}
	})
}

func startRelay(t *testing.T) string {
	t.Helper()
	st, err := storage.Open(context.Background(), storage.Options{
		Path: filepath.Join(t.TempDir(), "events.db"), Synchronous: "NORMAL", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := relay.DefaultConfig()
	cfg.Open = true
	cfg.Limits.EventsPerSecondPerIP, cfg.Limits.EventsPerSecondPerPubkey, cfg.Limits.ReqsPerSecondPerIP = 0, 0, 0
	rl := relay.New(cfg, st, slog.New(slog.DiscardHandler), nil)
	rl.Start()
	srv := httptest.NewServer(rl)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		rl.Close()
		srv.Close()
		st.Close()
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

type failBroadcast struct{ wallet.Chain }

func (failBroadcast) Broadcast(context.Context, *wire.MsgTx) (*chainhash.Hash, error) {
	return nil, errors.New("simulated crash before broadcast")
}

func mustHash(t *testing.T, s string) *chainhash.Hash {
	t.Helper()
	h, err := chainhash.NewHashFromStr(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func flipHex(c byte) string {
	if c == '0' {
		return "1"
	}
	return "0"
}

// countPayloads counts transactions committing root in the whole chain.
func countPayloads(t *testing.T, r *rt, rootHex string) int {
	t.Helper()
	best, err := r.wchain.BestHeight(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for h := best - 20; h <= best; h++ {
		hash, err := r.wchain.BlockHash(r.ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		blk, err := r.wchain.Block(r.ctx, hash)
		if err != nil {
			t.Fatal(err)
		}
		for _, tx := range blk.Transactions {
			if root, err := TxRoot(tx); err == nil && fmt.Sprintf("%x", root[:]) == rootHex {
				n++
			}
		}
	}
	return n
}
