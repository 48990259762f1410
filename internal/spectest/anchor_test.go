package spectest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/anchor"
	"github.com/anchorchat/anchorchat/identity"
)

// The "Worked example" of docs/protocol.md's Anchoring section, verbatim.
const (
	docLeaf0   = "722769c91149e618aec199019876da158074847542fcb1aa735a26f297be01e7"
	docLeaf1   = "4c11945cb4e80ff28807bccd3c8b351ae2c46c4a8ece918eff199e8639beaf95"
	docLeaf2   = "670133364d493b7d37d54bce6de6fe7f66065fa2b66f3200670391aff7c1af9c"
	docInner01 = "50e31221175377575342b3d0f9c74b303e67dfef12650fe9a702acd5a140707e"
	docTop     = "716391de83864875bd9c3fd120d94d91fa4235e80ef2130988b024ca9bfb2d71"
	docRoot    = "7c10552c2de66fcd5fe4e0ab5d5f1c86401b3507f7e240d54ec8103305dd18f4"
	docOpRet   = "41434854017c10552c2de66fcd5fe4e0ab5d5f1c86401b3507f7e240d54ec8103305dd18f4"
	docTxid    = "5c03bcc3699d36b46191360623bc4a1d0a68e690a0c9685f3f36d10feee9d6a3"
	docTx      = "020000000111111111111111111111111111111111111111111111111111111111111111110000000000fdffffff020000000000000000276a2541434854017c10552c2de66fcd5fe4e0ab5d5f1c86401b3507f7e240d54ec8103305dd18f4b882010000000000160014222222222222222222222222222222222222222200000000"
	docMerkle  = "549af620ab897b2635244a23b8a247ebf4c060e1a4ad78b3f8ea642f00e67fcc"
	docBlock   = "a59125775cfe50cb3b92b03513a527f896d1ba652edb6915e20ccabea9e4288d"
	docBranch0 = "e462795b4e7b545d945f492c50d667e7ea25b33d19e4d4c46247cfccc008dc9e"
	docBranch1 = "2e3732efc0a322e7205c48ba5417831f6d2d4179d13e6f2f9fb02e90b4b9b0b3"
	docProof   = "4143504601d88d0dc5f6b08989fc66a60391445e401314c24f624008cdd524e0228778c2c200000001000000030201722769c91149e618aec199019876da158074847542fcb1aa735a26f297be01e700670133364d493b7d37d54bce6de6fe7f66065fa2b66f3200670391aff7c1af9ca3d6e9ee0fd1363f5f68c9a090e6680a1d4abc2306369161b4369d69c3bc035c00000082020000000111111111111111111111111111111111111111111111111111111111111111110000000000fdffffff020000000000000000276a2541434854017c10552c2de66fcd5fe4e0ab5d5f1c86401b3507f7e240d54ec8103305dd18f4b88201000000000016001422222222222222222222222222222222222222220000000000000001029edc08c0cccf4762c4d4e4193db325eae767d6502c495f945d547b4e5b7962e4b3b0b9b4902eb09f2f6f3ed179412d6d1f831754ba485c20e722a3c0ef32372e8d28e4a9beca0ce21569db2e65bad196f827a51335b0923bcb50fe5c772591a5000cd140"
)

func docIDs(t *testing.T) [][32]byte {
	var ids [][32]byte
	for _, s := range []string{docClaim, docRotation, docRevocation} {
		ids = append(ids, fromHex32(parseEvent(t, s).ID))
	}
	return ids
}

func hx(b []byte) string { return hex.EncodeToString(b) }

// TestWorkedExampleTree recomputes the example's tree from the doc's rules
// and compares every stated value, and anchor's.
func TestWorkedExampleTree(t *testing.T) {
	ids := docIDs(t)
	l0, l1, l2 := specLeaf(ids[0]), specLeaf(ids[1]), specLeaf(ids[2])
	in01 := specInner(l0, l1)
	top := specInner(in01, l2)
	root := specCommitted(3, top)
	for _, c := range []struct {
		name      string
		got, want string
	}{
		{"leaf0", hx(l0[:]), docLeaf0}, {"leaf1", hx(l1[:]), docLeaf1}, {"leaf2", hx(l2[:]), docLeaf2},
		{"inner01", hx(in01[:]), docInner01}, {"top", hx(top[:]), docTop}, {"root", hx(root[:]), docRoot},
		{"OP_RETURN data", hx(specPayload(root)), docOpRet},
	} {
		if c.got != c.want {
			t.Errorf("%s: spec %s, doc %s", c.name, c.got, c.want)
		}
	}
	if r := specRoot(ids); r != root {
		t.Errorf("specRoot %x", r)
	}
	tree, err := anchor.NewTree(ids)
	if err != nil {
		t.Fatal(err)
	}
	if r := tree.Root(); hx(r[:]) != docRoot {
		t.Errorf("anchor.NewTree root %x, doc %s", r, docRoot)
	}
	if p := anchor.Payload(anchor.Hash(root)); hx(p) != docOpRet {
		t.Errorf("anchor.Payload %x, doc %s", p, docOpRet)
	}
}

// TestMerkleTree compares the doc's tree (leaf, inner, odd-node promotion,
// committed root, path shape and fold) with anchor's for 1..70 leaves.
func TestMerkleTree(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var id [32]byte
	for i := range id {
		id[i] = byte(rng.Uint32())
	}
	if got, want := anchor.LeafHash(id), specLeaf(id); got != anchor.Hash(want) {
		t.Errorf("LeafHash %x, spec %x", got, want)
	}
	a, b := specLeaf(id), specLeaf([32]byte{1})
	if got, want := anchor.InnerHash(a, b), specInner(a, b); got != anchor.Hash(want) {
		t.Errorf("InnerHash %x, spec %x", got, want)
	}
	if got, want := anchor.RootHash(258, a), specCommitted(258, a); got != anchor.Hash(want) {
		t.Errorf("RootHash %x, spec %x", got, want)
	}
	// A one-leaf tree: the top is the leaf's hash.
	if got, want := specRoot([][32]byte{id}), specCommitted(1, specLeaf(id)); got != want {
		t.Errorf("one-leaf spec root")
	}

	for n := 1; n <= 70; n++ {
		ids := make([][32]byte, n)
		for i := range ids {
			for j := range ids[i] {
				ids[i][j] = byte(rng.Uint32())
			}
		}
		tree, err := anchor.NewTree(ids)
		if err != nil {
			t.Fatal(err)
		}
		want := specRoot(ids)
		if got := tree.Root(); got != anchor.Hash(want) {
			t.Fatalf("n=%d: anchor root %x, spec %x", n, got, want)
		}
		for i := 0; i < n; i++ {
			sp := specPath(ids, i)
			cp := tree.Path(i)
			if len(sp) != len(cp) {
				t.Fatalf("n=%d i=%d: path length code %d, spec %d", n, i, len(cp), len(sp))
			}
			for k := range sp {
				if sp[k].left != cp[k].Left || sp[k].hash != [32]byte(cp[k].Hash) {
					t.Fatalf("n=%d i=%d step %d differs", n, i, k)
				}
			}
			shape := specShape(uint32(i), uint32(n))
			sides, err := anchor.PathSides(uint32(i), uint32(n))
			if err != nil || fmt.Sprint(sides) != fmt.Sprint(shape) {
				t.Fatalf("n=%d i=%d: PathSides %v %v, spec shape %v", n, i, sides, err, shape)
			}
			r, err := specFold(ids[i], uint32(i), uint32(n), sp)
			if err != nil || r != want {
				t.Fatalf("n=%d i=%d: spec fold %x %v", n, i, r, err)
			}
			cr, err := anchor.ComputeRoot(ids[i], uint32(i), uint32(n), cp)
			if err != nil || cr != anchor.Hash(want) {
				t.Fatalf("n=%d i=%d: ComputeRoot %x %v", n, i, cr, err)
			}
			// A path of another shape is refused by both.
			if len(cp) > 0 {
				bad := append([]anchor.Step(nil), cp...)
				bad[0].Left = !bad[0].Left
				if _, err := anchor.ComputeRoot(ids[i], uint32(i), uint32(n), bad); err == nil {
					t.Fatalf("n=%d i=%d: ComputeRoot accepts a flipped side", n, i)
				}
				if _, err := anchor.ComputeRoot(ids[i], uint32(i), uint32(n), cp[:len(cp)-1]); err == nil {
					t.Fatalf("n=%d i=%d: ComputeRoot accepts a short path", n, i)
				}
			}
		}
	}
	// No duplication: [a b c] and [a b c c] have different roots.
	x := [][32]byte{{1}, {2}, {3}}
	if specRoot(x) == specRoot(append(x, x[2])) {
		t.Error("spec: CVE-2012-2459 shape")
	}
}

// TestAnchorOutput compares the payload and script with anchor's, and the
// doc's list of refused encodings with anchor.TxRoot.
func TestAnchorOutput(t *testing.T) {
	root := fromHex32(docRoot)
	if got := anchor.Payload(anchor.Hash(root)); !bytes.Equal(got, specPayload(root)) {
		t.Errorf("Payload %x, spec %x", got, specPayload(root))
	}
	if r, err := anchor.ParsePayload(specPayload(root)); err != nil || r != anchor.Hash(root) {
		t.Errorf("ParsePayload of the spec payload: %x %v", r, err)
	}
	if anchor.AnchorScriptLen != 39 || anchor.Tag != "ACHT" {
		t.Errorf("AnchorScriptLen %d Tag %q", anchor.AnchorScriptLen, anchor.Tag)
	}
	pl := specPayload(root)
	mk := func(scripts ...[]byte) *wire.MsgTx {
		tx := wire.NewMsgTx(2)
		tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{Hash: chainhash.Hash{0x11}}, nil, nil))
		for _, s := range scripts {
			tx.AddTxOut(wire.NewTxOut(0, s))
		}
		return tx
	}
	p2wpkh := append([]byte{0x00, 0x14}, bytes.Repeat([]byte{0x22}, 20)...)
	cases := []struct {
		name string
		tx   *wire.MsgTx
	}{
		{"exact", mk(specAnchorScript(root), p2wpkh)},
		{"change first", mk(p2wpkh, specAnchorScript(root))},
		{"OP_PUSHDATA1", mk(append([]byte{0x6a, 0x4c, 0x25}, pl...))},
		{"OP_PUSHDATA2", mk(append([]byte{0x6a, 0x4d, 0x25, 0x00}, pl...))},
		{"opcode before", mk(append([]byte{0x6a, 0x51, 0x25}, pl...))},
		{"opcode after", mk(append(specAnchorScript(root), 0x51))},
		{"two OP_RETURNs", mk(specAnchorScript(root), []byte{0x6a})},
		{"no OP_RETURN", mk(p2wpkh)},
		{"version 2", mk(append([]byte{0x6a, 0x25, 'A', 'C', 'H', 'T', 2}, root[:]...))},
		{"other tag", mk(append([]byte{0x6a, 0x25, 'A', 'C', 'H', 'X', 1}, root[:]...))},
		{"short push", mk(append([]byte{0x6a, 0x24}, pl[:36]...))},
	}
	for _, c := range cases {
		sr, serr := specTxRoot(c.tx)
		cr, cerr := anchor.TxRoot(c.tx)
		if (serr == nil) != (cerr == nil) || (serr == nil && sr != [32]byte(cr)) {
			t.Errorf("%s: spec %x %v, anchor.TxRoot %x %v", c.name, sr, serr, cr, cerr)
		}
	}
}

// docAnchorTx builds the example's anchor transaction from its prose.
func docAnchorTx() *wire.MsgTx {
	tx := wire.NewMsgTx(2)
	var prev chainhash.Hash
	for i := range prev {
		prev[i] = 0x11
	}
	in := wire.NewTxIn(&wire.OutPoint{Hash: prev, Index: 0}, nil, nil)
	in.Sequence = 0xfffffffd
	tx.AddTxIn(in)
	tx.AddTxOut(wire.NewTxOut(0, specAnchorScript(fromHex32(docRoot))))
	tx.AddTxOut(wire.NewTxOut(99000, append([]byte{0x00, 0x14}, bytes.Repeat([]byte{0x22}, 20)...)))
	return tx
}

// TestWorkedExampleProof decodes the doc's proof hex with the spec decoder,
// checks every field against the prose, verifies it (path, tx, branch,
// header) independently, and compares with anchor's decoder, encoder and
// offline check.
func TestWorkedExampleProof(t *testing.T) {
	raw, _ := hex.DecodeString(docProof)
	sp, err := specDecode(raw)
	if err != nil {
		t.Fatalf("spec decoder refuses the doc's proof: %v", err)
	}
	if !bytes.Equal(specEncode(sp), raw) {
		t.Error("spec re-encoding differs")
	}
	rot := parseEvent(t, docRotation)
	ids := docIDs(t)

	// The transaction built from the prose is the doc's hex and txid.
	var txb bytes.Buffer
	if err := docAnchorTx().SerializeNoWitness(&txb); err != nil {
		t.Fatal(err)
	}
	if hx(txb.Bytes()) != docTx {
		t.Errorf("anchor tx from the prose:\n %x\ndoc:\n %s", txb.Bytes(), docTx)
	}
	if id := dsha(txb.Bytes()); display(id) != docTxid {
		t.Errorf("txid %s, doc %s", display(id), docTxid)
	}
	if stripped, err := anchor.StrippedTx(docAnchorTx()); err != nil || !bytes.Equal(stripped, txb.Bytes()) {
		t.Errorf("anchor.StrippedTx %x %v", stripped, err)
	}

	// Fields, as "Reading it" describes them.
	if sp.claimID != ids[1] || sp.leafIndex != 1 || sp.leafCount != 3 {
		t.Errorf("claim/index/count: %x %d %d", sp.claimID, sp.leafIndex, sp.leafCount)
	}
	if len(sp.path) != 2 || !sp.path[0].left || hx(sp.path[0].hash[:]) != docLeaf0 || sp.path[1].left || hx(sp.path[1].hash[:]) != docLeaf2 {
		t.Errorf("path %+v", sp.path)
	}
	if display(sp.txid) != docTxid || hx(sp.rawTx) != docTx || len(sp.rawTx) != 130 || sp.txIndex != 1 {
		t.Errorf("txid %s tx index %d len %d", display(sp.txid), sp.txIndex, len(sp.rawTx))
	}
	if len(sp.branch) != 2 || display(sp.branch[0]) != docBranch0 || display(sp.branch[1]) != docBranch1 {
		t.Errorf("branch %s / doc %s %s", func() (s []string) {
			for _, h := range sp.branch {
				s = append(s, display(h))
			}
			return
		}(), docBranch0, docBranch1)
	}
	if display(sp.blockHash) != docBlock || sp.height != 840000 {
		t.Errorf("block %s height %d", display(sp.blockHash), sp.height)
	}

	// Independent verification.
	root, blockRoot, err := specVerifyOffline(ids[1], sp)
	if err != nil {
		t.Fatalf("spec verification of the doc's proof: %v", err)
	}
	if hx(root[:]) != docRoot || display(blockRoot) != docMerkle {
		t.Errorf("root %x, block merkle root %s", root, display(blockRoot))
	}
	prevBlock := [32]byte{0x44}
	bh := specHeaderHash(0x20000000, prevBlock, blockRoot, 1767484800, 0x207fffff, 7)
	if display(bh) != docBlock || bh != sp.blockHash {
		t.Errorf("header hash %s, doc %s", display(bh), docBlock)
	}
	hdr := wire.NewBlockHeader(0x20000000, (*chainhash.Hash)(&prevBlock), (*chainhash.Hash)(&blockRoot), 0x207fffff, 7)
	hdr.Timestamp = time.Unix(1767484800, 0)
	if h := hdr.BlockHash(); h != chainhash.Hash(bh) {
		t.Errorf("btcd header hash %s", h)
	}

	// anchor's decoder, encoder and offline check.
	var cp anchor.Proof
	if err := cp.UnmarshalBinary(raw); err != nil {
		t.Fatalf("anchor refuses the doc's proof: %v", err)
	}
	assertSameProof(t, "doc", sp, &cp)
	if enc, err := cp.MarshalBinary(); err != nil || !bytes.Equal(enc, raw) {
		t.Errorf("anchor re-encoding differs: %v", err)
	}
	if _, r, mr, err := anchor.CheckProofOffline(rot, &cp); err != nil || r != anchor.Hash(root) || mr != chainhash.Hash(blockRoot) {
		t.Errorf("anchor.CheckProofOffline: %x %s %v", r, mr, err)
	}
	if r, err := anchor.TxBranchRoot(chainhash.Hash(sp.txid), sp.txIndex, []chainhash.Hash{chainhash.Hash(sp.branch[0]), chainhash.Hash(sp.branch[1])}); err != nil || r != chainhash.Hash(blockRoot) {
		t.Errorf("anchor.TxBranchRoot %s %v", r, err)
	}

	// Steps 5–7 against a chain holding the example block at 840000 with
	// 6 confirmations.
	chain := &fakeChain{headers: map[chainhash.Hash]*wire.BlockHeader{hdr.BlockHash(): hdr}, best: 840005,
		byHeight: map[int32]chainhash.Hash{840000: hdr.BlockHash()}}
	a, err := anchor.VerifyProof(context.Background(), chain, rot, &cp)
	if err != nil {
		t.Fatalf("anchor.VerifyProof: %v", err)
	}
	if a.Confirmations != 6 || a.Height != 840000 || a.BlockHash != docBlock || a.Txid != docTxid || a.Root != docRoot {
		t.Errorf("anchored %+v", a)
	}
	chain.byHeight[840000] = chainhash.Hash{9}
	if _, err := anchor.VerifyProof(context.Background(), chain, rot, &cp); err == nil {
		t.Error("VerifyProof accepts a block that left the best chain")
	}
}

type fakeChain struct {
	headers  map[chainhash.Hash]*wire.BlockHeader
	byHeight map[int32]chainhash.Hash
	best     int32
}

func (c *fakeChain) BlockHeader(_ context.Context, h *chainhash.Hash) (*wire.BlockHeader, error) {
	if hd, ok := c.headers[*h]; ok {
		return hd, nil
	}
	return nil, fmt.Errorf("header %s: %w", h, anchor.ErrNotInChain)
}

func (c *fakeChain) BlockHash(_ context.Context, height int32) (*chainhash.Hash, error) {
	if h, ok := c.byHeight[height]; ok {
		return &h, nil
	}
	return nil, fmt.Errorf("height %d: %w", height, anchor.ErrNotInChain)
}

func (c *fakeChain) BestHeight(context.Context) (int32, error) { return c.best, nil }

func assertSameProof(t *testing.T, what string, sp *specProof, cp *anchor.Proof) {
	t.Helper()
	same := sp.claimID == cp.ClaimID && sp.leafIndex == cp.LeafIndex && sp.leafCount == cp.LeafCount &&
		len(sp.path) == len(cp.Path) && sp.txid == [32]byte(cp.Txid) && bytes.Equal(sp.rawTx, cp.RawTx) &&
		sp.txIndex == cp.TxIndex && len(sp.branch) == len(cp.Branch) && sp.blockHash == [32]byte(cp.BlockHash) &&
		sp.height == cp.Height
	for k := 0; same && k < len(sp.path); k++ {
		same = sp.path[k].left == cp.Path[k].Left && sp.path[k].hash == [32]byte(cp.Path[k].Hash)
	}
	for k := 0; same && k < len(sp.branch); k++ {
		same = sp.branch[k] == [32]byte(cp.Branch[k])
	}
	if !same {
		t.Errorf("%s: spec and anchor decode differently:\n spec %+v\n code %+v", what, sp, cp)
	}
}

func toSpecPath(p []anchor.Step) []specStep {
	var out []specStep
	for _, s := range p {
		out = append(out, specStep{s.Left, s.Hash})
	}
	return out
}

// TestBatchProofs anchors batches of claims built by identity in blocks of
// various sizes and positions, using anchor's tree, payload, branch and
// encoder, and checks every proof with the spec's encoder and verifier.
func TestBatchProofs(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var events []*nostr.Event
	var ids [][32]byte
	for i := 0; i < 7; i++ {
		k := secretN(t, byte(10+i))
		e, err := identity.NewClaim(k, identity.ClaimParams{Handle: "user" + strconv.Itoa(i), CreatedAt: time.Unix(1767225600, 0)})
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, e)
		ids = append(ids, fromHex32(e.ID))
	}
	tree, err := anchor.NewTree(ids)
	if err != nil {
		t.Fatal(err)
	}
	root := tree.Root()
	if root != anchor.Hash(specRoot(ids)) {
		t.Fatalf("root differs")
	}
	tx := docAnchorTx()
	tx.TxOut[0].PkScript = append([]byte{0x6a, 0x25}, anchor.Payload(root)...)
	rawTx, err := anchor.StrippedTx(tx)
	if err != nil {
		t.Fatal(err)
	}
	txid := dsha(rawTx)
	if tx.TxHash() != chainhash.Hash(txid) {
		t.Fatal("txid")
	}

	for _, nTx := range []int{1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33} {
		for _, pos := range []int{0, nTx / 2, nTx - 1} {
			txids := make([][32]byte, nTx)
			chids := make([]chainhash.Hash, nTx)
			for i := range txids {
				for j := range txids[i] {
					txids[i][j] = byte(rng.Uint32())
				}
			}
			txids[pos] = txid
			for i := range txids {
				chids[i] = txids[i]
			}
			mr := specTxMerkleRoot(txids)
			if got := anchor.TxMerkleRoot(chids); got != chainhash.Hash(mr) {
				t.Fatalf("nTx=%d: TxMerkleRoot %s, spec %s", nTx, got, display(mr))
			}
			cb, err := anchor.BuildTxBranch(chids, pos)
			if err != nil {
				t.Fatal(err)
			}
			sb := specTxBranch(txids, pos)
			if len(cb) != len(sb) {
				t.Fatalf("nTx=%d pos=%d: branch length code %d spec %d", nTx, pos, len(cb), len(sb))
			}
			for k := range sb {
				if sb[k] != [32]byte(cb[k]) {
					t.Fatalf("nTx=%d pos=%d: branch %d differs", nTx, pos, k)
				}
			}
			hdr := wire.NewBlockHeader(0x20000000, &chainhash.Hash{0x44}, (*chainhash.Hash)(&mr), 0x207fffff, uint32(nTx))
			hdr.Timestamp = time.Unix(1767484800, 0)
			bh := hdr.BlockHash()

			for i := range ids {
				cp := &anchor.Proof{ClaimID: ids[i], LeafIndex: uint32(i), LeafCount: uint32(len(ids)), Path: tree.Path(i),
					Txid: txid, RawTx: rawTx, TxIndex: uint32(pos), Branch: cb, BlockHash: bh, Height: 840000 + uint32(nTx)}
				enc, err := cp.MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				sp := &specProof{claimID: ids[i], leafIndex: uint32(i), leafCount: uint32(len(ids)), path: toSpecPath(cp.Path),
					txid: txid, rawTx: rawTx, txIndex: uint32(pos), branch: sb, blockHash: bh, height: cp.Height}
				if !bytes.Equal(enc, specEncode(sp)) {
					t.Fatalf("nTx=%d leaf %d: anchor encoding\n %x\nspec\n %x", nTx, i, enc, specEncode(sp))
				}
				dp, err := specDecode(enc)
				if err != nil {
					t.Fatalf("spec decoder refuses anchor's proof: %v", err)
				}
				r, br, err := specVerifyOffline(ids[i], dp)
				if err != nil || r != [32]byte(root) || br != mr {
					t.Fatalf("nTx=%d pos=%d leaf %d: spec verification: %v", nTx, pos, i, err)
				}
				if specHeaderHash(0x20000000, [32]byte{0x44}, br, 1767484800, 0x207fffff, uint32(nTx)) != [32]byte(bh) {
					t.Fatal("header hash")
				}
				if _, r2, mr2, err := anchor.CheckProofOffline(events[i], cp); err != nil || r2 != root || mr2 != chainhash.Hash(mr) {
					t.Fatalf("CheckProofOffline: %v", err)
				}
			}
			// The padding duplicate and stray index bits are refused by both.
			if nTx > 1 && pos == nTx-1 && nTx%2 == 1 {
				// the last tx of an odd level: its level-0 sibling is itself.
				if _, err := specTxFold(txid, uint32(pos), sb); err != nil {
					t.Fatalf("spec refuses a genuine branch: %v", err)
				}
				// Claim a position one further (bit 0 set) with the same branch:
				// the duplicate sibling on the left.
				if _, err := specTxFold(txid, uint32(pos)+1, sb); err == nil {
					t.Fatal("spec accepts the padding duplicate")
				}
				if _, err := anchor.TxBranchRoot(txid, uint32(pos)+1, cb); err == nil {
					t.Errorf("anchor.TxBranchRoot accepts the padding duplicate (nTx=%d)", nTx)
				}
			}
			if len(cb) < 32 {
				stray := uint32(pos) | 1<<uint(len(cb))
				if _, err := anchor.TxBranchRoot(txid, stray, cb); err == nil {
					t.Errorf("anchor.TxBranchRoot accepts index bits beyond the branch (nTx=%d)", nTx)
				}
			}
		}
	}
}

// TestProofDecoderDifferential mutates the doc's proof and checks that
// the spec's decoder and anchor's accept exactly the same inputs, and decode
// them alike.
func TestProofDecoderDifferential(t *testing.T) {
	raw, _ := hex.DecodeString(docProof)
	rng := rand.New(rand.NewPCG(5, 6))
	check := func(name string, b []byte) {
		t.Helper()
		sp, serr := specDecode(b)
		var cp anchor.Proof
		cerr := cp.UnmarshalBinary(b)
		if (serr == nil) != (cerr == nil) {
			t.Errorf("%s: spec %v, anchor %v\n %x", name, serr, cerr, b)
			return
		}
		if serr == nil {
			assertSameProof(t, name, sp, &cp)
			if enc, err := cp.MarshalBinary(); err != nil || !bytes.Equal(enc, b) {
				t.Errorf("%s: accepted proof has another encoding", name)
			}
		}
	}
	set := func(off int, v ...byte) []byte {
		b := append([]byte(nil), raw...)
		copy(b[off:], v)
		return b
	}
	// Offsets in the doc's proof.
	const (
		offVersion = 4
		offIndex   = 37
		offCount   = 41
		offK       = 45
		offSide0   = 46
		offTxid    = 46 + 2*33
		offLen     = offTxid + 32
		offTx      = offLen + 4
		offTxIndex = offTx + 130
		offM       = offTxIndex + 4
	)
	check("doc", raw)
	check("magic", set(0, 'X'))
	check("version 0", set(offVersion, 0))
	check("version 2", set(offVersion, 2))
	check("count 0", set(offCount, 0, 0, 0, 0))
	check("index = count", set(offIndex, 0, 0, 0, 3))
	check("index 2", set(offIndex, 0, 0, 0, 2))
	check("count 1000", set(offCount, 0, 0, 3, 0xe8))
	check("side 2", set(offSide0, 2))
	check("side swapped", set(offSide0, 0))
	check("k 33", set(offK, 33))
	check("k 1", set(offK, 1))
	check("m 33", set(offM, 33))
	check("tx len 0", set(offLen, 0, 0, 0, 0))
	check("tx len 100001", set(offLen, 0, 1, 0x86, 0xa1))
	check("trailing", append(append([]byte(nil), raw...), 0))
	check("short", raw[:len(raw)-1])
	check("empty", nil)
	// A witness serialisation of the same tx (marker 00 01) is not the
	// stripped form.
	check("witness marker", func() []byte {
		tx := docAnchorTx()
		tx.TxIn[0].Witness = wire.TxWitness{{1}}
		var w bytes.Buffer
		_ = tx.Serialize(&w)
		return rebuildWithTx(raw, offLen, 130, w.Bytes())
	}())
	check("64-byte tx", func() []byte {
		tx := wire.NewMsgTx(1)
		tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{}, nil, nil))
		tx.AddTxOut(wire.NewTxOut(0, bytes.Repeat([]byte{0x51}, 64-60)))
		var w bytes.Buffer
		_ = tx.SerializeNoWitness(&w)
		if w.Len() != 64 {
			t.Fatalf("64-byte tx is %d", w.Len())
		}
		return rebuildWithTx(raw, offLen, 130, w.Bytes())
	}())
	check("no outputs", func() []byte {
		tx := docAnchorTx()
		tx.TxOut = nil
		var w bytes.Buffer
		_ = tx.SerializeNoWitness(&w)
		return rebuildWithTx(raw, offLen, 130, w.Bytes())
	}())
	check("non-minimal varint", func() []byte {
		var w bytes.Buffer
		tx, _ := hex.DecodeString(docTx)
		w.Write(tx[:4])
		w.Write([]byte{0xfd, 0x01, 0x00}) // input count 1 as a 3-byte varint
		w.Write(tx[5:])
		return rebuildWithTx(raw, offLen, 130, w.Bytes())
	}())
	// The decoder checks the layout, not the path's shape (that is the
	// verifier's "merkle path" step): a well-formed proof whose path does
	// not fit (leaf index, leaf count) decodes, and fails verification.
	dp, _ := specDecode(raw)
	dp.leafIndex = 0
	check("wrong shape", specEncode(dp))
	if _, _, err := specVerifyOffline(dp.claimID, dp); err == nil {
		t.Error("spec verifies a path of the wrong shape")
	}
	var wrong anchor.Proof
	if err := wrong.UnmarshalBinary(specEncode(dp)); err == nil {
		if _, _, _, err := anchor.CheckProofOffline(parseEvent(t, docRotation), &wrong); err == nil {
			t.Error("anchor verifies a path of the wrong shape")
		}
	}
	for i := 0; i < 3000; i++ {
		b := append([]byte(nil), raw...)
		for j := rng.IntN(3) + 1; j > 0; j-- {
			b[rng.IntN(len(b))] = byte(rng.Uint32())
		}
		check("random "+strconv.Itoa(i), b)
	}
}

func rebuildWithTx(raw []byte, offLen, oldLen int, tx []byte) []byte {
	var b []byte
	b = append(b, raw[:offLen]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(tx)))
	b = append(b, tx...)
	return append(b, raw[offLen+4+oldLen:]...)
}

// TestAttestationEvent checks anchor.NewAttestationEvent against the doc:
// kind 3782, content {"v":1,"claim":…,"proof":"<base64 std padded>"},
// decoded strictly, and the indexing tags.
func TestAttestationEvent(t *testing.T) {
	raw, _ := hex.DecodeString(docProof)
	var cp anchor.Proof
	if err := cp.UnmarshalBinary(raw); err != nil {
		t.Fatal(err)
	}
	rot := parseEvent(t, docRotation)
	node := secretN(t, 7)
	ev, err := anchor.NewAttestationEvent(node, rot, &cp, 1767500000)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Kind != 3782 || ev.PubKey != node.PublicKey() || ev.GetID() != ev.ID {
		t.Errorf("kind %d pubkey %s", ev.Kind, ev.PubKey)
	}
	if ok, _ := ev.CheckSignature(); !ok {
		t.Error("signature")
	}
	var content struct {
		V     int             `json:"v"`
		Claim json.RawMessage `json:"claim"`
		Proof string          `json:"proof"`
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(ev.Content)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&content); err != nil {
		t.Fatalf("content %s: %v", ev.Content, err)
	}
	if content.V != 1 {
		t.Errorf("v = %d", content.V)
	}
	var claim nostr.Event
	if err := json.Unmarshal(content.Claim, &claim); err != nil || claim.ID != rot.ID || claim.Sig != rot.Sig {
		t.Errorf("embedded claim: %v", err)
	}
	if content.Proof != base64.StdEncoding.EncodeToString(raw) {
		t.Errorf("proof is not padded standard base64 of the binary proof: %s", content.Proof)
	}
	want := map[string][]string{
		"e":     {rot.ID},
		"n":     {"alice"},
		"p":     {rot.PubKey},
		"k":     {"3780"},
		"block": {"840000", docBlock},
	}
	for name, vals := range want {
		tg := tagsNamed(ev.Tags, name)
		if len(tg) != 1 || fmt.Sprint(tg[0][1:]) != fmt.Sprint(vals) {
			t.Errorf("tag %s: %v, want %v", name, tg, vals)
		}
	}
	checkOnlyTags(t, "attestation", ev, "e", "n", "p", "k", "block", "alt")

	// An attestation built here from the doc parses with anchor, and one
	// with an unknown content field is refused.
	own := func(extra string) *nostr.Event {
		claimJSON, _ := json.Marshal(rot)
		e := &nostr.Event{Kind: 3782, CreatedAt: 1767500000, Tags: nostr.Tags{
			{"e", rot.ID}, {"n", "alice"}, {"p", rot.PubKey}, {"k", "3780"}, {"block", "840000", docBlock},
		}, Content: `{"v":1,"claim":` + string(claimJSON) + `,"proof":"` + base64.StdEncoding.EncodeToString(raw) + `"` + extra + `}`}
		if err := node.Sign(e); err != nil {
			t.Fatal(err)
		}
		return e
	}
	if a, err := anchor.ParseAttestation(own("")); err != nil || a.Claim.ID != rot.ID {
		t.Errorf("anchor.ParseAttestation of a doc-built attestation: %v", err)
	}
	if _, err := anchor.ParseAttestation(own(`,"x":1`)); err == nil {
		t.Error("anchor.ParseAttestation accepts an unknown content field")
	}
}

// TestAnchoringOrder: "order by block height, then tx index in the block,
// then leaf index, then claim id" (ids compared as lowercase hex, i.e.
// byte-wise), against anchor's Anchored.Before.
func TestAnchoringOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	mk := func() *anchor.Anchored {
		var id [32]byte
		id[0] = byte(rng.IntN(3))
		id[31] = byte(rng.Uint32())
		return &anchor.Anchored{Height: int32(rng.IntN(3)), TxIndex: uint32(rng.IntN(3)), LeafIndex: uint32(rng.IntN(3)), ClaimID: hex.EncodeToString(id[:])}
	}
	before := func(a, b *anchor.Anchored) bool {
		if a.Height != b.Height {
			return a.Height < b.Height
		}
		if a.TxIndex != b.TxIndex {
			return a.TxIndex < b.TxIndex
		}
		if a.LeafIndex != b.LeafIndex {
			return a.LeafIndex < b.LeafIndex
		}
		return a.ClaimID < b.ClaimID
	}
	for i := 0; i < 5000; i++ {
		a, b := mk(), mk()
		if got, want := a.Before(b), before(a, b); got != want {
			t.Fatalf("%+v before %+v: anchor %v, spec %v", a, b, got, want)
		}
	}
}

// TestAttestationContentStrict: the proof is standard padded base64; other
// versions are refused.
func TestAttestationContentStrict(t *testing.T) {
	raw, _ := hex.DecodeString(docProof)
	rot := parseEvent(t, docRotation)
	node := secretN(t, 7)
	claimJSON, _ := json.Marshal(rot)
	mk := func(v, proof string) *nostr.Event {
		e := &nostr.Event{Kind: 3782, CreatedAt: 1767500000, Tags: nostr.Tags{
			{"e", rot.ID}, {"n", "alice"}, {"p", rot.PubKey}, {"k", "3780"}, {"block", "840000", docBlock},
		}, Content: `{"v":` + v + `,"claim":` + string(claimJSON) + `,"proof":"` + proof + `"}`}
		if err := node.Sign(e); err != nil {
			t.Fatal(err)
		}
		return e
	}
	std := base64.StdEncoding.EncodeToString(raw)
	for _, c := range []struct {
		name, v, proof string
		ok             bool
	}{
		{"standard", "1", std, true},
		{"v2", "2", std, false},
		{"unpadded", "1", base64.RawStdEncoding.EncodeToString(raw), false},
		{"url alphabet", "1", base64.URLEncoding.EncodeToString(raw), base64.URLEncoding.EncodeToString(raw) == std},
	} {
		if _, err := anchor.ParseAttestation(mk(c.v, c.proof)); (err == nil) != c.ok {
			t.Errorf("%s: anchor.ParseAttestation err %v, want ok=%v", c.name, err, c.ok)
		}
	}
}
