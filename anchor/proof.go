package anchor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

// Proof is the self-contained evidence that a claim event id was anchored:
// its Merkle path to the committed root, the anchor transaction, that
// transaction's branch to the block's merkle root, and the block.
type Proof struct {
	ClaimID   [32]byte
	LeafIndex uint32
	LeafCount uint32
	Path      []Step
	Txid      chainhash.Hash // internal byte order (as in wire)
	RawTx     []byte         // transaction serialised without witness
	TxIndex   uint32         // position in the block (coinbase = 0)
	Branch    []chainhash.Hash
	BlockHash chainhash.Hash // internal byte order
	Height    uint32
}

// Encoding limits.
const (
	// ProofMagic starts every encoded proof.
	ProofMagic = "ACPF"
	// ProofVersion is the encoding version.
	ProofVersion = 1
	// MaxRawTx bounds the anchor transaction in a proof.
	MaxRawTx = 100_000
	// MaxProofSize bounds a whole encoded proof.
	MaxProofSize = 4 + 1 + 32 + 8 + 1 + MaxTreeDepth*33 + 32 + 4 + MaxRawTx + 4 + 1 + MaxTreeDepth*32 + 32 + 4
)

// ErrProofEncoding is wrapped by every decoding error.
var ErrProofEncoding = errors.New("anchor: malformed proof encoding")

// MarshalBinary encodes p (docs/protocol.md, "Proof encoding"):
//
//	"ACPF" | version u8 = 1 | claim id [32] | leaf index u32 | leaf count u32 |
//	path length u8 | path length × (side u8: 0 right, 1 left | hash [32]) |
//	txid [32] | raw tx length u32 | raw tx | tx index u32 |
//	branch length u8 | branch length × hash [32] | block hash [32] | height u32
//
// Integers are big-endian; txid, branch hashes and block hash are in
// internal (wire) byte order, i.e. reversed from their usual hex display.
func (p *Proof) MarshalBinary() ([]byte, error) {
	if len(p.Path) > MaxTreeDepth || len(p.Branch) > MaxTreeDepth {
		return nil, fmt.Errorf("anchor: proof path %d / branch %d longer than %d", len(p.Path), len(p.Branch), MaxTreeDepth)
	}
	if len(p.RawTx) > MaxRawTx {
		return nil, fmt.Errorf("anchor: raw tx of %d bytes exceeds %d", len(p.RawTx), MaxRawTx)
	}
	b := make([]byte, 0, 128+33*len(p.Path)+len(p.RawTx)+32*len(p.Branch))
	b = append(b, ProofMagic...)
	b = append(b, ProofVersion)
	b = append(b, p.ClaimID[:]...)
	b = binary.BigEndian.AppendUint32(b, p.LeafIndex)
	b = binary.BigEndian.AppendUint32(b, p.LeafCount)
	b = append(b, byte(len(p.Path)))
	for _, s := range p.Path {
		if s.Left {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
		b = append(b, s.Hash[:]...)
	}
	b = append(b, p.Txid[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(p.RawTx)))
	b = append(b, p.RawTx...)
	b = binary.BigEndian.AppendUint32(b, p.TxIndex)
	b = append(b, byte(len(p.Branch)))
	for _, h := range p.Branch {
		b = append(b, h[:]...)
	}
	b = append(b, p.BlockHash[:]...)
	b = binary.BigEndian.AppendUint32(b, p.Height)
	return b, nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.err = fmt.Errorf("%w: truncated at %s (need %d bytes, %d left)", ErrProofEncoding, what, n, len(r.b))
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8(what string) byte {
	v := r.take(1, what)
	if v == nil {
		return 0
	}
	return v[0]
}

func (r *reader) u32(what string) uint32 {
	v := r.take(4, what)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint32(v)
}

func (r *reader) hash(what string) (h [32]byte) {
	copy(h[:], r.take(32, what))
	return h
}

// UnmarshalBinary is the strict decoder: the exact layout of MarshalBinary,
// known magic and version, side bytes 0 or 1, lengths within limits, leaf
// index below leaf count, a raw transaction that parses as a non-witness
// transaction and re-encodes to the same bytes, and no trailing bytes.
// Decoding checks form only; Verify checks meaning.
func (p *Proof) UnmarshalBinary(data []byte) error {
	if len(data) > MaxProofSize {
		return fmt.Errorf("%w: %d bytes exceeds %d", ErrProofEncoding, len(data), MaxProofSize)
	}
	r := &reader{b: data}
	if m := r.take(4, "magic"); r.err == nil && string(m) != ProofMagic {
		return fmt.Errorf("%w: magic %q, want %q", ErrProofEncoding, m, ProofMagic)
	}
	if v := r.u8("version"); r.err == nil && v != ProofVersion {
		return fmt.Errorf("%w: version %d, this implementation reads %d", ErrProofEncoding, v, ProofVersion)
	}
	var q Proof
	q.ClaimID = r.hash("claim id")
	q.LeafIndex = r.u32("leaf index")
	q.LeafCount = r.u32("leaf count")
	if r.err == nil && (q.LeafCount == 0 || q.LeafIndex >= q.LeafCount) {
		return fmt.Errorf("%w: leaf index %d of %d leaves", ErrProofEncoding, q.LeafIndex, q.LeafCount)
	}
	n := int(r.u8("path length"))
	if n > MaxTreeDepth {
		return fmt.Errorf("%w: path of %d steps exceeds %d", ErrProofEncoding, n, MaxTreeDepth)
	}
	for i := 0; i < n && r.err == nil; i++ {
		sd := r.u8("path side")
		if r.err == nil && sd > 1 {
			return fmt.Errorf("%w: path step %d has side byte %d (0 or 1)", ErrProofEncoding, i, sd)
		}
		q.Path = append(q.Path, Step{Left: sd == 1, Hash: r.hash("path hash")})
	}
	q.Txid = r.hash("txid")
	txLen := r.u32("raw tx length")
	if r.err == nil && (txLen == 0 || txLen > MaxRawTx) {
		return fmt.Errorf("%w: raw tx length %d (1 to %d)", ErrProofEncoding, txLen, MaxRawTx)
	}
	q.RawTx = bytes.Clone(r.take(int(txLen), "raw tx"))
	q.TxIndex = r.u32("tx index")
	n = int(r.u8("branch length"))
	if n > MaxTreeDepth {
		return fmt.Errorf("%w: branch of %d levels exceeds %d", ErrProofEncoding, n, MaxTreeDepth)
	}
	for i := 0; i < n && r.err == nil; i++ {
		q.Branch = append(q.Branch, r.hash("branch hash"))
	}
	q.BlockHash = r.hash("block hash")
	q.Height = r.u32("height")
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrProofEncoding, len(r.b))
	}
	if _, err := parseRawTx(q.RawTx); err != nil {
		return fmt.Errorf("%w: raw tx: %w", ErrProofEncoding, err)
	}
	*p = q
	return nil
}

// parseRawTx parses a non-witness transaction serialisation and requires it
// to be canonical (re-encodes to the same bytes), to have inputs and
// outputs, and not to be 64 bytes long (a 64-byte transaction could pose as
// an inner node of the block's merkle tree).
func parseRawTx(raw []byte) (*wire.MsgTx, error) {
	if len(raw) == 64 {
		return nil, errors.New("64-byte transaction (ambiguous with a merkle node)")
	}
	tx := new(wire.MsgTx)
	if err := tx.DeserializeNoWitness(bytes.NewReader(raw)); err != nil {
		return nil, err
	}
	if len(tx.TxIn) == 0 || len(tx.TxOut) == 0 {
		return nil, errors.New("transaction without inputs or outputs")
	}
	var buf bytes.Buffer
	if err := tx.SerializeNoWitness(&buf); err != nil {
		return nil, err
	}
	if !bytes.Equal(buf.Bytes(), raw) {
		return nil, errors.New("non-canonical encoding (trailing bytes or non-minimal varints)")
	}
	return tx, nil
}

// StrippedTx is tx serialised without witness: what a proof carries, and
// what its txid is the double SHA-256 of.
func StrippedTx(tx *wire.MsgTx) ([]byte, error) {
	var buf bytes.Buffer
	if err := tx.SerializeNoWitness(&buf); err != nil {
		return nil, fmt.Errorf("anchor: serialise tx: %w", err)
	}
	return buf.Bytes(), nil
}
