// Package anchor commits handle-claim events to Bitcoin and verifies them
// against block headers: a Merkle tree over claim event ids, its root in one
// OP_RETURN output, a batcher that persists claims and drives the anchor
// transaction to confirmation (with RBF fee bumps), self-contained
// attestations (claim -> root -> tx -> block), and the verification rules
// (earliest anchored claim of a handle wins; only the current key rotates or
// revokes). docs/protocol.md, "Anchoring", is the normative description.
package anchor

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Domain-separation prefixes of the claim Merkle tree. A leaf hash, an inner
// node hash and the committed root are SHA-256 over messages that start with
// different bytes and have different lengths (33, 65, 37 bytes), so no value
// of one kind can be presented as another.
const (
	prefixLeaf  = 0x00
	prefixInner = 0x01
	prefixRoot  = 0x02
)

// MaxTreeDepth bounds a claim proof's path (2^32 leaves would need 32).
const MaxTreeDepth = 32

// Hash is a 32-byte SHA-256 value.
type Hash [32]byte

// LeafHash is SHA256(0x00 || id) for a 32-byte event id.
func LeafHash(id [32]byte) Hash {
	var b [33]byte
	b[0] = prefixLeaf
	copy(b[1:], id[:])
	return sha256.Sum256(b[:])
}

// InnerHash is SHA256(0x01 || left || right).
func InnerHash(left, right Hash) Hash {
	var b [65]byte
	b[0] = prefixInner
	copy(b[1:], left[:])
	copy(b[33:], right[:])
	return sha256.Sum256(b[:])
}

// RootHash is the committed root: SHA256(0x02 || uint32be(n) || top), where
// top is the top node of the tree over n leaves. Committing n binds every
// proof's (leaf index, leaf count) to the root, so a leaf's index (the last
// tie-break between claims) cannot be misstated.
func RootHash(n uint32, top Hash) Hash {
	var b [37]byte
	b[0] = prefixRoot
	binary.BigEndian.PutUint32(b[1:5], n)
	copy(b[5:], top[:])
	return sha256.Sum256(b[:])
}

// Step is one sibling on a path from a leaf to the top: Left means the
// sibling is the left operand (the running hash is on the right).
type Step struct {
	Left bool
	Hash Hash
}

// Tree is a Merkle tree over claim event ids. Levels are built pairwise from
// the left; a level with an odd number of nodes promotes its last node
// unchanged to the next level (it is never paired with itself, unlike
// Bitcoin's transaction tree: CVE-2012-2459).
type Tree struct {
	levels [][]Hash // levels[0] are leaf hashes; the last level has one node
}

// ErrEmptyTree: a tree needs at least one leaf.
var ErrEmptyTree = errors.New("anchor: empty Merkle tree")

// NewTree builds the tree over ids, in order.
func NewTree(ids [][32]byte) (*Tree, error) {
	if len(ids) == 0 {
		return nil, ErrEmptyTree
	}
	if uint64(len(ids)) > 1<<32-1 {
		return nil, fmt.Errorf("anchor: %d leaves, at most 2^32-1", len(ids))
	}
	lvl := make([]Hash, len(ids))
	for i, id := range ids {
		lvl[i] = LeafHash(id)
	}
	t := &Tree{levels: [][]Hash{lvl}}
	for len(lvl) > 1 {
		next := make([]Hash, 0, (len(lvl)+1)/2)
		for i := 0; i+1 < len(lvl); i += 2 {
			next = append(next, InnerHash(lvl[i], lvl[i+1]))
		}
		if len(lvl)%2 == 1 {
			next = append(next, lvl[len(lvl)-1])
		}
		t.levels = append(t.levels, next)
		lvl = next
	}
	return t, nil
}

// Len is the number of leaves.
func (t *Tree) Len() int { return len(t.levels[0]) }

// Root is the committed root (RootHash of the leaf count and the top node).
func (t *Tree) Root() Hash {
	return RootHash(uint32(t.Len()), t.levels[len(t.levels)-1][0])
}

// Path returns the siblings from leaf i up to the top.
func (t *Tree) Path(i int) []Step {
	var path []Step
	for _, lvl := range t.levels[:len(t.levels)-1] {
		switch {
		case i%2 == 1:
			path = append(path, Step{Left: true, Hash: lvl[i-1]})
		case i+1 < len(lvl):
			path = append(path, Step{Left: false, Hash: lvl[i+1]})
		}
		i /= 2
	}
	return path
}

// PathSides returns, for leaf index of a tree of n leaves, the side of each
// sibling on its path (true: the sibling is on the left). It is the shape a
// valid path must have; VerifyPath checks a proof against it.
func PathSides(index, n uint32) ([]bool, error) {
	if n == 0 || index >= n {
		return nil, fmt.Errorf("leaf index %d out of range for %d leaves", index, n)
	}
	var sides []bool
	i, w := uint64(index), uint64(n)
	for w > 1 {
		switch {
		case i%2 == 1:
			sides = append(sides, true)
		case i+1 < w:
			sides = append(sides, false)
		}
		i /= 2
		w = (w + 1) / 2
	}
	return sides, nil
}

// ComputeRoot folds path over the leaf of id at index in a tree of n leaves
// and returns the committed root. It fails if the path's shape (length and
// sides) is not the one (index, n) requires.
func ComputeRoot(id [32]byte, index, n uint32, path []Step) (Hash, error) {
	sides, err := PathSides(index, n)
	if err != nil {
		return Hash{}, err
	}
	if len(path) != len(sides) {
		return Hash{}, fmt.Errorf("path has %d siblings, leaf %d of %d needs %d", len(path), index, n, len(sides))
	}
	h := LeafHash(id)
	for k, s := range path {
		if s.Left != sides[k] {
			return Hash{}, fmt.Errorf("sibling %d is on the %s, leaf %d of %d needs it on the %s",
				k, side(s.Left), index, n, side(sides[k]))
		}
		if s.Left {
			h = InnerHash(s.Hash, h)
		} else {
			h = InnerHash(h, s.Hash)
		}
	}
	return RootHash(n, h), nil
}

func side(left bool) string {
	if left {
		return "left"
	}
	return "right"
}
