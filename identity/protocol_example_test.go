package identity

import (
	"encoding/hex"
	"encoding/json"
	"testing"

	"github.com/nbd-wtf/go-nostr"
)

// The example chain printed in docs/protocol.md ("Handle claims"), made with
// the throwaway secret keys 1 and 2. An independent implementation can use
// it as a test vector; this test keeps the document honest.
const docExampleChain = `[
{"kind":3780,"id":"c60536e91f71021c1598fd59347ede2ff666b2c92c2033c6fbdd972701bf939d","pubkey":"79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798","created_at":1767225600,"tags":[["n","alice"],["ln","02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619"],["relay","wss://relay.alice.example"],["alt","anchorchat handle claim: @alice"]],"content":"","sig":"e538b3f247cd78ce34abf47909ab2d9fc49b495ed28861fa5d280b450d6fe746d3e3fdb7c9470634959337968cbc734acf6acd6c6c2a5c242f07d234995749ef"},
{"kind":3780,"id":"d88d0dc5f6b08989fc66a60391445e401314c24f624008cdd524e0228778c2c2","pubkey":"c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5","created_at":1767312000,"tags":[["n","alice"],["relay","wss://relay.alice.example"],["prev","c60536e91f71021c1598fd59347ede2ff666b2c92c2033c6fbdd972701bf939d","79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"],["consent","cc244a4c7980a1a7a21f33bbd5cdcdafe8fe07e6b73f56d2a2020b2150a4b807100eef381581799dfaaa934faf7ab9ddf5b79445543cf24ffc75df2d088799c1"],["alt","anchorchat handle rotation: @alice"]],"content":"","sig":"479249497bf431a884d32ab690045800431a028df6887dd613b2c17d6a2124ead66dc87cbce1b033447753e7dabd14b22aeb540c16057fa47497d655756283f9"},
{"kind":3781,"id":"680f533c6f3ebb3a6004281070f14b48a7a038f653a60903001f935147f6ef8d","pubkey":"c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5","created_at":1767398400,"tags":[["n","alice"],["e","d88d0dc5f6b08989fc66a60391445e401314c24f624008cdd524e0228778c2c2"],["alt","anchorchat handle revocation: @alice"]],"content":"key retired","sig":"aa30702175ca0e04bd0ebc910f6e4e254c7d4a56376390bedbb4da8a2f1213213dbef505044546d85c8d2138fe0658737f631c8dd169990b537df9b5e55571a4"}
]`

const docExampleDigest = "ce6a054e34862707efaa241dba56a63bb6a93e1ac9cf2d683d439e74eb14dcfa"

func TestProtocolDocExample(t *testing.T) {
	var evts []*nostr.Event
	if err := json.Unmarshal([]byte(docExampleChain), &evts); err != nil {
		t.Fatal(err)
	}
	st, err := ValidateChain(evts)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Revoked || st.Genesis.ID != evts[0].ID || st.Current.ID != evts[1].ID || st.Genesis.LNNode == "" {
		t.Fatalf("state %+v", st)
	}
	d := RotationConsentDigest("alice", evts[0].ID, evts[1].PubKey)
	if hex.EncodeToString(d[:]) != docExampleDigest {
		t.Fatalf("consent digest %x", d)
	}
	if err := VerifyDigest(evts[0].PubKey, d, st.Current.Consent); err != nil {
		t.Fatal(err)
	}
}
