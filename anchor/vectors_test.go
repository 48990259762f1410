package anchor

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/nbd-wtf/go-nostr"
)

// The worked example of docs/protocol.md ("Anchoring: worked example"): the
// three events of the "Handle claims" example, anchored in one batch, in a
// synthetic block. Another implementation can recompute every value.
const docClaims = `[
{"kind":3780,"id":"c60536e91f71021c1598fd59347ede2ff666b2c92c2033c6fbdd972701bf939d","pubkey":"79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798","created_at":1767225600,"tags":[["n","alice"],["ln","02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619"],["relay","wss://relay.alice.example"],["alt","anchorchat handle claim: @alice"]],"content":"","sig":"e538b3f247cd78ce34abf47909ab2d9fc49b495ed28861fa5d280b450d6fe746d3e3fdb7c9470634959337968cbc734acf6acd6c6c2a5c242f07d234995749ef"},
{"kind":3780,"id":"d88d0dc5f6b08989fc66a60391445e401314c24f624008cdd524e0228778c2c2","pubkey":"c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5","created_at":1767312000,"tags":[["n","alice"],["relay","wss://relay.alice.example"],["prev","c60536e91f71021c1598fd59347ede2ff666b2c92c2033c6fbdd972701bf939d","79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"],["consent","cc244a4c7980a1a7a21f33bbd5cdcdafe8fe07e6b73f56d2a2020b2150a4b807100eef381581799dfaaa934faf7ab9ddf5b79445543cf24ffc75df2d088799c1"],["alt","anchorchat handle rotation: @alice"]],"content":"","sig":"479249497bf431a884d32ab690045800431a028df6887dd613b2c17d6a2124ead66dc87cbce1b033447753e7dabd14b22aeb540c16057fa47497d655756283f9"},
{"kind":3781,"id":"680f533c6f3ebb3a6004281070f14b48a7a038f653a60903001f935147f6ef8d","pubkey":"c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5","created_at":1767398400,"tags":[["n","alice"],["e","d88d0dc5f6b08989fc66a60391445e401314c24f624008cdd524e0228778c2c2"],["alt","anchorchat handle revocation: @alice"]],"content":"key retired","sig":"aa30702175ca0e04bd0ebc910f6e4e254c7d4a56376390bedbb4da8a2f1213213dbef505044546d85c8d2138fe0658737f631c8dd169990b537df9b5e55571a4"}
]`

const docHeight, docConfs = 840000, 6

// Values printed in docs/protocol.md.
var docVectors = map[string]string{
	"leaf0":   "722769c91149e618aec199019876da158074847542fcb1aa735a26f297be01e7",
	"leaf1":   "4c11945cb4e80ff28807bccd3c8b351ae2c46c4a8ece918eff199e8639beaf95",
	"leaf2":   "670133364d493b7d37d54bce6de6fe7f66065fa2b66f3200670391aff7c1af9c",
	"inner01": "50e31221175377575342b3d0f9c74b303e67dfef12650fe9a702acd5a140707e",
	"top":     "716391de83864875bd9c3fd120d94d91fa4235e80ef2130988b024ca9bfb2d71",
	"root":    "7c10552c2de66fcd5fe4e0ab5d5f1c86401b3507f7e240d54ec8103305dd18f4",
	"payload": "41434854017c10552c2de66fcd5fe4e0ab5d5f1c86401b3507f7e240d54ec8103305dd18f4",
	"rawtx":   "020000000111111111111111111111111111111111111111111111111111111111111111110000000000fdffffff020000000000000000276a2541434854017c10552c2de66fcd5fe4e0ab5d5f1c86401b3507f7e240d54ec8103305dd18f4b882010000000000160014222222222222222222222222222222222222222200000000",
	"txid":    "5c03bcc3699d36b46191360623bc4a1d0a68e690a0c9685f3f36d10feee9d6a3",
	"branch0": "e462795b4e7b545d945f492c50d667e7ea25b33d19e4d4c46247cfccc008dc9e",
	"branch1": "2e3732efc0a322e7205c48ba5417831f6d2d4179d13e6f2f9fb02e90b4b9b0b3",
	"merkle":  "549af620ab897b2635244a23b8a247ebf4c060e1a4ad78b3f8ea642f00e67fcc",
	"block":   "a59125775cfe50cb3b92b03513a527f896d1ba652edb6915e20ccabea9e4288d",
	"proof1":  "4143504601d88d0dc5f6b08989fc66a60391445e401314c24f624008cdd524e0228778c2c200000001000000030201722769c91149e618aec199019876da158074847542fcb1aa735a26f297be01e700670133364d493b7d37d54bce6de6fe7f66065fa2b66f3200670391aff7c1af9ca3d6e9ee0fd1363f5f68c9a090e6680a1d4abc2306369161b4369d69c3bc035c00000082020000000111111111111111111111111111111111111111111111111111111111111111110000000000fdffffff020000000000000000276a2541434854017c10552c2de66fcd5fe4e0ab5d5f1c86401b3507f7e240d54ec8103305dd18f4b88201000000000016001422222222222222222222222222222222222222220000000000000001029edc08c0cccf4762c4d4e4193db325eae767d6502c495f945d547b4e5b7962e4b3b0b9b4902eb09f2f6f3ed179412d6d1f831754ba485c20e722a3c0ef32372e8d28e4a9beca0ce21569db2e65bad196f827a51335b0923bcb50fe5c772591a5000cd140",
}

func docExample(t testing.TB) ([]*nostr.Event, map[string]string, *memChain, *Proof) {
	var evts []*nostr.Event
	if err := json.Unmarshal([]byte(docClaims), &evts); err != nil {
		t.Fatal(err)
	}
	ids := make([][32]byte, len(evts))
	for i, e := range evts {
		hex.Decode(ids[i][:], []byte(e.ID))
	}
	tree, err := NewTree(ids)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for i := range ids {
		h := LeafHash(ids[i])
		got["leaf"+string(rune('0'+i))] = hex.EncodeToString(h[:])
	}
	in := InnerHash(LeafHash(ids[0]), LeafHash(ids[1]))
	got["inner01"] = hex.EncodeToString(in[:])
	top := InnerHash(in, LeafHash(ids[2]))
	got["top"] = hex.EncodeToString(top[:])
	root := tree.Root()
	got["root"] = hex.EncodeToString(root[:])
	got["payload"] = hex.EncodeToString(Payload(root))
	tx := fixtureTx(root)
	raw, _ := StrippedTx(tx)
	got["rawtx"] = hex.EncodeToString(raw)
	got["txid"] = tx.TxHash().String()
	chain, blk := fixtureBlock(tx, docHeight, docConfs)
	p := fixtureProof(tree, ids, 1, blk, docHeight)
	got["branch0"], got["branch1"] = p.Branch[0].String(), p.Branch[1].String()
	got["merkle"] = blk.Header.MerkleRoot.String()
	got["block"] = blk.Header.BlockHash().String()
	bin, _ := p.MarshalBinary()
	got["proof1"] = hex.EncodeToString(bin)
	return evts, got, chain, p
}

func TestDocVectors(t *testing.T) {
	evts, got, chain, p := docExample(t)
	for k, want := range docVectors {
		if got[k] != want {
			t.Errorf("%s = %s, doc says %q", k, got[k], want)
		}
	}
	// The proof in the doc decodes and verifies (rotation, leaf 1).
	bin, _ := hex.DecodeString(docVectors["proof1"])
	var q Proof
	if err := q.UnmarshalBinary(bin); err != nil {
		t.Fatal(err)
	}
	an, err := VerifyProof(context.Background(), chain, evts[1], &q)
	if err != nil {
		t.Fatal(err)
	}
	if an.Height != docHeight || an.Confirmations != docConfs || an.TxIndex != 1 || an.LeafIndex != 1 || an.LeafCount != 3 {
		t.Fatalf("anchored %+v", an)
	}
	_ = p
	doc, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range docVectors {
		if !strings.Contains(string(doc), v) {
			t.Errorf("docs/protocol.md lacks vector %s = %s", k, v)
		}
	}
}

// flakyChain fails every call the way a dead btcd does.
type flakyChain struct{}

func (flakyChain) BlockHeader(context.Context, *chainhash.Hash) (*wire.BlockHeader, error) {
	return nil, errors.New("btcd getblockheader: connection refused")
}
func (flakyChain) BlockHash(context.Context, int32) (*chainhash.Hash, error) {
	return nil, errors.New("btcd getblockhash: connection refused")
}
func (flakyChain) BestHeight(context.Context) (int32, error) {
	return 0, errors.New("connection refused")
}

// A chain source that fails is not a verdict on the proof (it used to turn a
// btcd outage into INVALID "block unknown"); a source that answers it has no
// such block is.
func TestChainSourceFailureIsNoVerdict(t *testing.T) {
	evts, _, chain, p := docExample(t)
	_, err := VerifyProof(context.Background(), flakyChain{}, evts[1], p)
	var pe *ProofError
	if !errors.As(err, &pe) || pe.Step != StepChain {
		t.Fatalf("dead chain source: %v", err)
	}
	empty := &memChain{headers: map[chainhash.Hash]*wire.BlockHeader{}, byH: map[int32]chainhash.Hash{}, best: chain.best}
	if _, err := VerifyProof(context.Background(), empty, evts[1], p); !errors.As(err, &pe) || pe.Step != StepBlockHash {
		t.Fatalf("block unknown to the source: %v", err)
	}
}
