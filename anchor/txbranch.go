package anchor

import (
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
)

// Bitcoin's transaction Merkle tree (the header's merkle root): double
// SHA-256 of the concatenated children, the last node of an odd level paired
// with itself. btcd has no gettxoutproof, so the batcher builds the branch
// from the block's txids (BuildTxBranch) and verifiers fold it
// (TxBranchRoot).

// BuildTxBranch returns the sibling hashes from txids[index] up to the
// merkle root, bottom first. txids are in block order (coinbase first).
func BuildTxBranch(txids []chainhash.Hash, index int) ([]chainhash.Hash, error) {
	if index < 0 || index >= len(txids) {
		return nil, fmt.Errorf("tx index %d out of range for %d transactions", index, len(txids))
	}
	lvl := append([]chainhash.Hash(nil), txids...)
	var branch []chainhash.Hash
	for len(lvl) > 1 {
		if len(lvl)%2 == 1 {
			lvl = append(lvl, lvl[len(lvl)-1])
		}
		branch = append(branch, lvl[index^1])
		next := make([]chainhash.Hash, len(lvl)/2)
		for i := range next {
			next[i] = hashPair(&lvl[2*i], &lvl[2*i+1])
		}
		lvl, index = next, index/2
	}
	return branch, nil
}

// TxMerkleRoot computes a block's merkle root from its txids (for tests and
// for checking a block before building branches).
func TxMerkleRoot(txids []chainhash.Hash) chainhash.Hash {
	lvl := append([]chainhash.Hash(nil), txids...)
	for len(lvl) > 1 {
		if len(lvl)%2 == 1 {
			lvl = append(lvl, lvl[len(lvl)-1])
		}
		next := make([]chainhash.Hash, len(lvl)/2)
		for i := range next {
			next[i] = hashPair(&lvl[2*i], &lvl[2*i+1])
		}
		lvl = next
	}
	return lvl[0]
}

func hashPair(l, r *chainhash.Hash) chainhash.Hash {
	var b [64]byte
	copy(b[:32], l[:])
	copy(b[32:], r[:])
	return chainhash.DoubleHashH(b[:])
}

// errDuplicateSibling: a branch whose sibling at an odd position equals the
// running hash would place the transaction at the position of its own
// duplicate (CVE-2012-2459's padding), overstating its index.
var errDuplicateSibling = errors.New("sibling duplicates the running hash at an odd position (padding node, not a transaction)")

// TxBranchRoot folds branch over txid at index (the bits of index choose the
// side at each level) and returns the resulting merkle root.
func TxBranchRoot(txid chainhash.Hash, index uint32, branch []chainhash.Hash) (chainhash.Hash, error) {
	if len(branch) > MaxTreeDepth || (len(branch) < 32 && uint64(index)>>len(branch) != 0) {
		return chainhash.Hash{}, fmt.Errorf("tx index %d does not fit a branch of %d levels", index, len(branch))
	}
	h := txid
	for k := range branch {
		s := &branch[k]
		if index>>k&1 == 1 {
			if *s == h {
				return chainhash.Hash{}, fmt.Errorf("level %d: %w", k, errDuplicateSibling)
			}
			h = hashPair(s, &h)
		} else {
			h = hashPair(&h, s)
		}
	}
	return h, nil
}
