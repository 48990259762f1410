package anchor

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/anchorchat/anchorchat/identity"
)

// TestMeasure prints the figures of BENCH.md in one run:
//
//	go test -tags libsecp256k1 -run TestMeasure -v ./anchor
//
// For batches of 10, 1,000 and 100,000 claims: tree build time, proof size
// (binary, and the whole attestation event as JSON), verify time without
// chain I/O (in-memory chain source; full VerifyProof including the claim's
// BIP-340 signature, and the Merkle path alone), and the anchor tx's vsize
// and cost per claim at 10 sat/vB.
func TestMeasure(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement")
	}
	key, _ := identity.KeyFromHex(strings.Repeat("0", 63) + "3")
	vsize := signedAnchorVSize(t)
	const rate = 10 // sat/vB
	var rows []string
	for _, n := range []int{10, 1000, 100_000} {
		claimEvt, err := identity.NewClaim(key, identity.ClaimParams{Handle: fmt.Sprintf("measure%d", n), Relays: []string{"wss://relay.example.com"}})
		if err != nil {
			t.Fatal(err)
		}
		ids := testIDs(n)
		mid := n / 2
		hex.Decode(ids[mid][:], []byte(claimEvt.ID))
		start := time.Now()
		tree, err := NewTree(ids)
		if err != nil {
			t.Fatal(err)
		}
		build := time.Since(start)
		tx := fixtureTx(tree.Root())
		chain, blk := fixtureBlock(tx, 840000, 6)
		p := fixtureProof(tree, ids, mid, blk, 840000)
		bin, _ := p.MarshalBinary()
		evt, err := NewAttestationEvent(key, claimEvt, p, 0)
		if err != nil {
			t.Fatal(err)
		}
		evtJSON, _ := json.Marshal(evt)
		ctx := context.Background()
		if _, err := VerifyProof(ctx, chain, claimEvt, p); err != nil {
			t.Fatal(err)
		}
		full := testing.Benchmark(func(b *testing.B) {
			for b.Loop() {
				if _, err := VerifyProof(ctx, chain, claimEvt, p); err != nil {
					b.Fatal(err)
				}
			}
		})
		path := testing.Benchmark(func(b *testing.B) {
			for b.Loop() {
				if _, err := ComputeRoot(p.ClaimID, p.LeafIndex, p.LeafCount, p.Path); err != nil {
					b.Fatal(err)
				}
			}
		})
		cost := vsize * rate
		rows = append(rows, fmt.Sprintf("| %d | %v | %d | %d | %d B | %d B | %.1f µs | %.2f µs | %d vB | %d sat | %.4f sat |",
			n, build.Round(time.Microsecond), len(p.Path), len(p.Branch), len(bin), len(evtJSON),
			float64(full.NsPerOp())/1e3, float64(path.NsPerOp())/1e3, vsize, cost, float64(cost)/float64(n)))
	}
	t.Logf("\n| claims | tree build | path steps | tx branch | proof (binary) | attestation event (JSON) | verify, full (no chain I/O) | verify, Merkle path only | anchor tx | tx cost at %d sat/vB | cost per claim |\n|---|---|---|---|---|---|---|---|---|---|---|\n%s",
		rate, strings.Join(rows, "\n"))
}
