// Package spectest checks docs/protocol.md against the code: the byte-level
// parts of the wire format are implemented here a second time from the
// document alone (this file), and the tests compare what this independent
// implementation computes with what the project's packages produce.
//
// Nothing in this file calls or copies the project's implementation of the
// same thing; it uses the standard library, go-nostr (event ids and
// signatures), btcec's BIP-340 and btcd's wire/chainhash types.
package spectest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/wire"
)

// ---- Handle claims: the rotation consent digest ----

// specConsentDigest is "The consent digest is the 32-byte SHA-256 of these
// bytes, with no length prefixes:
// "anchorchat:handle-rotation:v1" 0x00 <handle> 0x00 <prev claim id> 0x00 <new pubkey>".
func specConsentDigest(handle, prevID, newPub string) [32]byte {
	var b bytes.Buffer
	b.WriteString("anchorchat:handle-rotation:v1")
	b.WriteByte(0)
	b.WriteString(handle)
	b.WriteByte(0)
	b.WriteString(prevID)
	b.WriteByte(0)
	b.WriteString(newPub)
	return sha256.Sum256(b.Bytes())
}

// ---- Anchor output ----

// specPayload is `"ACHT" (41 43 48 54) | version 0x01 | root (32 bytes)`.
func specPayload(root [32]byte) []byte {
	p := []byte{0x41, 0x43, 0x48, 0x54, 0x01}
	return append(p, root[:]...)
}

// specAnchorScript is "exactly the 39 bytes `6a 25 <payload>`".
func specAnchorScript(root [32]byte) []byte {
	return append([]byte{0x6a, 0x25}, specPayload(root)...)
}

// specTxRoot applies the doc's rule for an anchor transaction: exactly one
// output whose script starts with 6a, that script exactly 6a 25 + 37 bytes,
// those bytes starting with "ACHT" and version 1. It returns the root.
func specTxRoot(tx *wire.MsgTx) ([32]byte, error) {
	var root [32]byte
	var found [][]byte
	for _, o := range tx.TxOut {
		if len(o.PkScript) > 0 && o.PkScript[0] == 0x6a {
			found = append(found, o.PkScript)
		}
	}
	if len(found) != 1 {
		return root, fmt.Errorf("%d OP_RETURN outputs", len(found))
	}
	s := found[0]
	if len(s) != 39 || s[1] != 0x25 {
		return root, errors.New("OP_RETURN script is not 6a 25 <37 bytes>")
	}
	if string(s[2:6]) != "ACHT" || s[6] != 1 {
		return root, errors.New("payload tag/version")
	}
	copy(root[:], s[7:])
	return root, nil
}

// ---- Claim Merkle tree ----

func specLeaf(id [32]byte) [32]byte {
	return sha256.Sum256(append([]byte{0x00}, id[:]...))
}

func specInner(l, r [32]byte) [32]byte {
	b := make([]byte, 0, 65)
	b = append(b, 0x01)
	b = append(b, l[:]...)
	b = append(b, r[:]...)
	return sha256.Sum256(b)
}

func specCommitted(n uint32, top [32]byte) [32]byte {
	b := make([]byte, 0, 37)
	b = append(b, 0x02)
	b = binary.BigEndian.AppendUint32(b, n)
	b = append(b, top[:]...)
	return sha256.Sum256(b)
}

// specLevels builds the levels bottom up: pairwise from the left, an odd
// level's last node promoted unchanged.
func specLevels(ids [][32]byte) [][][32]byte {
	lvl := make([][32]byte, len(ids))
	for i, id := range ids {
		lvl[i] = specLeaf(id)
	}
	levels := [][][32]byte{lvl}
	for len(lvl) > 1 {
		var next [][32]byte
		for i := 0; i+1 < len(lvl); i += 2 {
			next = append(next, specInner(lvl[i], lvl[i+1]))
		}
		if len(lvl)%2 == 1 {
			next = append(next, lvl[len(lvl)-1])
		}
		levels = append(levels, next)
		lvl = next
	}
	return levels
}

func specRoot(ids [][32]byte) [32]byte {
	levels := specLevels(ids)
	return specCommitted(uint32(len(ids)), levels[len(levels)-1][0])
}

type specStep struct {
	left bool // sibling on the left
	hash [32]byte
}

// specShape is the doc's path shape of (i, n): at each level with width w,
// if i is odd the sibling is on the left; else if i+1 < w on the right;
// else no step; then i ← ⌊i/2⌋, w ← ⌈w/2⌉, until w = 1.
func specShape(i, n uint32) []bool {
	var sides []bool
	for w := n; w > 1; w = (w + 1) / 2 {
		if i%2 == 1 {
			sides = append(sides, true)
		} else if i+1 < w {
			sides = append(sides, false)
		}
		i /= 2
	}
	return sides
}

// specPath lists the sibling at each level where the running node has one.
func specPath(ids [][32]byte, i int) []specStep {
	levels := specLevels(ids)
	var path []specStep
	for _, lvl := range levels[:len(levels)-1] {
		if i%2 == 1 {
			path = append(path, specStep{true, lvl[i-1]})
		} else if i+1 < len(lvl) {
			path = append(path, specStep{false, lvl[i+1]})
		}
		i /= 2
	}
	return path
}

// specFold verifies the shape and folds a path to the committed root.
func specFold(id [32]byte, i, n uint32, path []specStep) ([32]byte, error) {
	if n == 0 || i >= n {
		return [32]byte{}, errors.New("index out of range")
	}
	shape := specShape(i, n)
	if len(shape) != len(path) || len(path) > 32 {
		return [32]byte{}, errors.New("path length")
	}
	h := specLeaf(id)
	for k, s := range path {
		if s.left != shape[k] {
			return [32]byte{}, errors.New("path side")
		}
		if s.left {
			h = specInner(s.hash, h)
		} else {
			h = specInner(h, s.hash)
		}
	}
	return specCommitted(n, h), nil
}

// ---- Bitcoin's transaction tree ----

func dsha(b []byte) [32]byte {
	h := sha256.Sum256(b)
	return sha256.Sum256(h[:])
}

func dshaPair(l, r [32]byte) [32]byte {
	return dsha(append(append([]byte{}, l[:]...), r[:]...))
}

// specTxLevels: double SHA-256 of left ‖ right, an odd level's last node
// paired with itself.
func specTxLevels(txids [][32]byte) [][][32]byte {
	lvl := append([][32]byte{}, txids...)
	levels := [][][32]byte{lvl}
	for len(lvl) > 1 {
		var next [][32]byte
		for i := 0; i < len(lvl); i += 2 {
			r := lvl[i]
			if i+1 < len(lvl) {
				r = lvl[i+1]
			}
			next = append(next, dshaPair(lvl[i], r))
		}
		levels = append(levels, next)
		lvl = next
	}
	return levels
}

func specTxMerkleRoot(txids [][32]byte) [32]byte {
	l := specTxLevels(txids)
	return l[len(l)-1][0]
}

func specTxBranch(txids [][32]byte, index int) [][32]byte {
	levels := specTxLevels(txids)
	var br [][32]byte
	for _, lvl := range levels[:len(levels)-1] {
		sib := index ^ 1
		if sib >= len(lvl) {
			sib = index
		}
		br = append(br, lvl[sib])
		index /= 2
	}
	return br
}

// specTxFold: bit k of the index set means the sibling is on the left at
// level k; rejects the padding duplicate on a set bit and index bits
// beyond the branch length.
func specTxFold(txid [32]byte, index uint32, branch [][32]byte) ([32]byte, error) {
	if len(branch) > 32 {
		return [32]byte{}, errors.New("branch too long")
	}
	if len(branch) < 32 && index>>uint(len(branch)) != 0 {
		return [32]byte{}, errors.New("index bits beyond the branch")
	}
	h := txid
	for k, s := range branch {
		if index>>uint(k)&1 == 1 {
			if s == h {
				return [32]byte{}, errors.New("padding duplicate on the left")
			}
			h = dshaPair(s, h)
		} else {
			h = dshaPair(h, s)
		}
	}
	return h, nil
}

// ---- Proof encoding ----

type specProof struct {
	claimID   [32]byte
	leafIndex uint32
	leafCount uint32
	path      []specStep
	txid      [32]byte // internal byte order
	rawTx     []byte
	txIndex   uint32
	branch    [][32]byte
	blockHash [32]byte // internal byte order
	height    uint32
}

func specEncode(p *specProof) []byte {
	var b []byte
	b = append(b, "ACPF"...)
	b = append(b, 0x01)
	b = append(b, p.claimID[:]...)
	b = binary.BigEndian.AppendUint32(b, p.leafIndex)
	b = binary.BigEndian.AppendUint32(b, p.leafCount)
	b = append(b, byte(len(p.path)))
	for _, s := range p.path {
		if s.left {
			b = append(b, 0x01)
		} else {
			b = append(b, 0x00)
		}
		b = append(b, s.hash[:]...)
	}
	b = append(b, p.txid[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(p.rawTx)))
	b = append(b, p.rawTx...)
	b = binary.BigEndian.AppendUint32(b, p.txIndex)
	b = append(b, byte(len(p.branch)))
	for _, h := range p.branch {
		b = append(b, h[:]...)
	}
	b = append(b, p.blockHash[:]...)
	b = binary.BigEndian.AppendUint32(b, p.height)
	return b
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b) < n {
		r.err = errors.New("short")
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u32() uint32 {
	v := r.take(4)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint32(v)
}

func (r *reader) u8() byte {
	v := r.take(1)
	if v == nil {
		return 0
	}
	return v[0]
}

func (r *reader) h32() (h [32]byte) {
	copy(h[:], r.take(32))
	return h
}

// specDecode is the doc's strict decoder: exact layout, known magic and
// version, side bytes 0 or 1, the table's limits, a raw tx that parses as
// a non-witness transaction with inputs and outputs, re-encodes to the same
// bytes and is not 64 bytes long, and no trailing bytes.
func specDecode(data []byte) (*specProof, error) {
	r := &reader{b: data}
	p := &specProof{}
	if string(r.take(4)) != "ACPF" {
		return nil, errors.New("magic")
	}
	if r.u8() != 1 {
		return nil, errors.New("version")
	}
	p.claimID = r.h32()
	p.leafIndex = r.u32()
	p.leafCount = r.u32()
	if r.err == nil && (p.leafCount < 1 || p.leafIndex >= p.leafCount) {
		return nil, errors.New("leaf index/count")
	}
	k := r.u8()
	if k > 32 {
		return nil, errors.New("path length")
	}
	for j := 0; j < int(k) && r.err == nil; j++ {
		side := r.u8()
		if side > 1 {
			return nil, errors.New("side byte")
		}
		p.path = append(p.path, specStep{side == 1, r.h32()})
	}
	p.txid = r.h32()
	l := r.u32()
	if r.err == nil && (l < 1 || l > 100000) {
		return nil, errors.New("raw tx length")
	}
	p.rawTx = append([]byte(nil), r.take(int(l))...)
	p.txIndex = r.u32()
	m := r.u8()
	if m > 32 {
		return nil, errors.New("branch length")
	}
	for j := 0; j < int(m) && r.err == nil; j++ {
		p.branch = append(p.branch, r.h32())
	}
	p.blockHash = r.h32()
	p.height = r.u32()
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, errors.New("trailing bytes")
	}
	if len(p.rawTx) == 64 {
		return nil, errors.New("64-byte tx")
	}
	var tx wire.MsgTx
	if err := tx.DeserializeNoWitness(bytes.NewReader(p.rawTx)); err != nil {
		return nil, fmt.Errorf("raw tx: %w", err)
	}
	if len(tx.TxIn) == 0 || len(tx.TxOut) == 0 {
		return nil, errors.New("raw tx without inputs or outputs")
	}
	var re bytes.Buffer
	if err := tx.SerializeNoWitness(&re); err != nil || !bytes.Equal(re.Bytes(), p.rawTx) {
		return nil, errors.New("raw tx does not re-encode to itself")
	}
	return p, nil
}

// specVerifyOffline is "Verifying one attestation" steps 2–5 without a
// chain: it returns the claim Merkle root and the block merkle root the
// branch leads to.
func specVerifyOffline(claimID [32]byte, p *specProof) (root, blockRoot [32]byte, err error) {
	if claimID != p.claimID {
		return root, blockRoot, errors.New("claim id")
	}
	root, err = specFold(p.claimID, p.leafIndex, p.leafCount, p.path)
	if err != nil {
		return root, blockRoot, fmt.Errorf("merkle path: %w", err)
	}
	var tx wire.MsgTx
	if err := tx.DeserializeNoWitness(bytes.NewReader(p.rawTx)); err != nil {
		return root, blockRoot, fmt.Errorf("anchor tx: %w", err)
	}
	if dsha(p.rawTx) != p.txid {
		return root, blockRoot, errors.New("anchor tx: txid")
	}
	txRoot, err := specTxRoot(&tx)
	if err != nil {
		return root, blockRoot, fmt.Errorf("anchor tx: %w", err)
	}
	if txRoot != root {
		return root, blockRoot, errors.New("merkle path: root differs from the anchor's")
	}
	blockRoot, err = specTxFold(p.txid, p.txIndex, p.branch)
	if err != nil {
		return root, blockRoot, fmt.Errorf("tx branch: %w", err)
	}
	return root, blockRoot, nil
}

// specHeaderHash is the double SHA-256 of the 80-byte header: version,
// previous block, merkle root, time, bits, nonce (little-endian integers,
// hashes in internal order), as Bitcoin defines it.
func specHeaderHash(version int32, prev, merkle [32]byte, time, bits, nonce uint32) [32]byte {
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, uint32(version))
	b = append(b, prev[:]...)
	b = append(b, merkle[:]...)
	b = binary.LittleEndian.AppendUint32(b, time)
	b = binary.LittleEndian.AppendUint32(b, bits)
	b = binary.LittleEndian.AppendUint32(b, nonce)
	return dsha(b)
}

// display turns an internal-order hash into its usual (reversed) hex.
func display(h [32]byte) string {
	var r [32]byte
	for i := range h {
		r[i] = h[31-i]
	}
	return hex.EncodeToString(r[:])
}

func fromDisplay(s string) [32]byte {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		panic("bad hash " + s)
	}
	var h [32]byte
	for i := range h {
		h[i] = b[31-i]
	}
	return h
}

func fromHex32(s string) [32]byte {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		panic("bad hex32 " + s)
	}
	var h [32]byte
	copy(h[:], b)
	return h
}
