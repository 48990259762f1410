package anchor

import (
	"crypto/sha256"
	"encoding/binary"
	"testing"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

func testIDs(n int) [][32]byte {
	ids := make([][32]byte, n)
	for i := range ids {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(i))
		ids[i] = sha256.Sum256(b[:])
	}
	return ids
}

func TestTreeProofsAllSizes(t *testing.T) {
	for n := 1; n <= 70; n++ {
		ids := testIDs(n)
		tree, err := NewTree(ids)
		if err != nil {
			t.Fatal(err)
		}
		for i := range ids {
			root, err := ComputeRoot(ids[i], uint32(i), uint32(n), tree.Path(i))
			if err != nil || root != tree.Root() {
				t.Fatalf("n=%d i=%d: %v", n, i, err)
			}
			// Any other index or count must fail.
			for _, j := range []int{i - 1, i + 1} {
				if j >= 0 && j < n {
					if r, err := ComputeRoot(ids[i], uint32(j), uint32(n), tree.Path(i)); err == nil && r == tree.Root() {
						t.Fatalf("n=%d: leaf %d proves at index %d", n, i, j)
					}
				}
			}
			if r, err := ComputeRoot(ids[i], uint32(i), uint32(n+1), tree.Path(i)); err == nil && r == tree.Root() {
				t.Fatalf("n=%d i=%d: proves with count n+1", n, i)
			}
		}
	}
}

// Bitcoin's duplication makes [a b c] and [a b c c] share a root; ours
// must not, and an inner node must not verify as a leaf.
func TestTreeNoDuplicateCollision(t *testing.T) {
	ids := testIDs(3)
	t3, _ := NewTree(ids)
	t4, _ := NewTree(append(ids, ids[2]))
	if t3.Root() == t4.Root() {
		t.Fatal("padding collision")
	}
	t2, _ := NewTree(ids[:2])
	inner := InnerHash(LeafHash(ids[0]), LeafHash(ids[1]))
	t1, _ := NewTree([][32]byte{inner})
	if t1.Root() == t2.Root() {
		t.Fatal("inner node passes as a leaf")
	}
}

func TestTxBranchMatchesBtcd(t *testing.T) {
	for n := 1; n <= 20; n++ {
		var txs []*btcutil.Tx
		var txids []chainhash.Hash
		for i := 0; i < n; i++ {
			tx := wire.NewMsgTx(2)
			tx.LockTime = uint32(i)
			tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{Index: uint32(i)}, nil, nil))
			tx.AddTxOut(wire.NewTxOut(int64(i), []byte{0x51}))
			txs = append(txs, btcutil.NewTx(tx))
			txids = append(txids, tx.TxHash())
		}
		want := blockchain.CalcMerkleRoot(txs, false)
		if got := TxMerkleRoot(txids); got != want {
			t.Fatalf("n=%d: merkle root %s, btcd %s", n, got, want)
		}
		for i := range txids {
			br, err := BuildTxBranch(txids, i)
			if err != nil {
				t.Fatal(err)
			}
			got, err := TxBranchRoot(txids[i], uint32(i), br)
			if err != nil || got != want {
				t.Fatalf("n=%d i=%d: %v", n, i, err)
			}
		}
		if n%2 == 1 && n > 1 {
			// The padding duplicate of the last tx must not prove position n.
			br, _ := BuildTxBranch(txids, n-1)
			if _, err := TxBranchRoot(txids[n-1], uint32(n), br); err == nil {
				t.Fatalf("n=%d: duplicate position accepted", n)
			}
		}
	}
}
