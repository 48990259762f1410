package anchor

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/nbd-wtf/go-nostr"
)

// Steps of proof verification, named in ProofError.Step (and so in INVALID
// verdict reasons).
const (
	StepEncoding       = "encoding"
	StepClaim          = "claim"
	StepClaimSignature = "claim signature"
	StepClaimID        = "claim id"
	StepMerklePath     = "merkle path"
	StepAnchorTx       = "anchor tx"
	StepTxid           = "txid"
	StepTxBranch       = "tx branch"
	StepBlockHash      = "block hash"
	StepHeight         = "height"
	StepBestChain      = "best chain"
	StepChain          = "chain source"
)

// ProofError says which step of verification failed. Step is one of the
// Step* constants.
type ProofError struct {
	Step string
	Err  error
}

func (e *ProofError) Error() string { return e.Step + ": " + e.Err.Error() }
func (e *ProofError) Unwrap() error { return e.Err }

func perr(step, format string, args ...any) error {
	return &ProofError{Step: step, Err: fmt.Errorf(format, args...)}
}

// Anchored is a verified anchoring of one claim event.
type Anchored struct {
	Claim         *identity.Claim `json:"-"`
	ClaimID       string          `json:"claim_id"`
	Root          string          `json:"root"`
	Txid          string          `json:"txid"`
	BlockHash     string          `json:"block_hash"`
	Height        int32           `json:"height"`
	TxIndex       uint32          `json:"tx_index"`
	LeafIndex     uint32          `json:"leaf_index"`
	LeafCount     uint32          `json:"leaf_count"`
	Confirmations int32           `json:"confirmations"`
}

// Before orders anchorings: lower block height, then lower position in the
// block, then lower leaf index, then (the same leaf can't hold two ids)
// lower claim id.
func (a *Anchored) Before(b *Anchored) bool {
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

// CheckProofOffline checks everything that needs no chain: the claim event
// (ValidateClaim: id, signature, tags), that its id is the proof's leaf, the
// Merkle path to a root, that root in the anchor transaction's OP_RETURN,
// the transaction's txid, and its branch. It returns the claim, the root
// and the block merkle root the branch leads to.
func CheckProofOffline(claim *nostr.Event, p *Proof) (*identity.Claim, Hash, chainhash.Hash, error) {
	var zero chainhash.Hash
	if claim == nil {
		return nil, Hash{}, zero, perr(StepClaim, "no claim event")
	}
	if !claim.CheckID() {
		return nil, Hash{}, zero, perr(StepClaim, "claim event does not hash to its id %s (content altered)", claim.ID)
	}
	c, err := identity.ValidateClaim(claim)
	if err != nil {
		if errors.Is(err, identity.ErrClaimSignature) {
			return nil, Hash{}, zero, &ProofError{StepClaimSignature, err}
		}
		return nil, Hash{}, zero, &ProofError{StepClaim, err}
	}
	if hex.EncodeToString(p.ClaimID[:]) != c.ID {
		return nil, Hash{}, zero, perr(StepClaimID, "proof is for leaf %x, the claim event is %s", p.ClaimID, c.ID)
	}
	root, err := ComputeRoot(p.ClaimID, p.LeafIndex, p.LeafCount, p.Path)
	if err != nil {
		return nil, Hash{}, zero, &ProofError{StepMerklePath, err}
	}
	tx, err := parseRawTx(p.RawTx)
	if err != nil {
		return nil, Hash{}, zero, perr(StepAnchorTx, "raw transaction does not parse: %w", err)
	}
	if txid := tx.TxHash(); txid != p.Txid {
		return nil, Hash{}, zero, perr(StepAnchorTx, "raw tx hashes to txid %s, the proof names %s (raw tx altered)", txid, p.Txid)
	}
	txRoot, err := TxRoot(tx)
	if err != nil {
		return nil, Hash{}, zero, perr(StepAnchorTx, "%w", err)
	}
	if txRoot != root {
		return nil, Hash{}, zero, perr(StepMerklePath, "path leads to root %x, the anchor tx commits %x (path, sibling order, leaf index or count altered, or a different tx)", root, txRoot)
	}
	mr, err := TxBranchRoot(p.Txid, p.TxIndex, p.Branch)
	if err != nil {
		return nil, Hash{}, zero, &ProofError{StepTxBranch, err}
	}
	return c, root, mr, nil
}

// VerifyProof checks a proof end to end against chain: CheckProofOffline,
// then the block header by the proof's hash (its hash must be that hash and
// its merkle root what the branch leads to), then that the best chain has
// this block at the proof's height. It returns the anchoring with its
// confirmations (best height - height + 1). Failures are *ProofError;
// a chain source failure is StepChain (not a verdict on the proof).
func VerifyProof(ctx context.Context, chain ChainSource, claim *nostr.Event, p *Proof) (*Anchored, error) {
	c, root, mr, err := CheckProofOffline(claim, p)
	if err != nil {
		return nil, err
	}
	hdr, err := chain.BlockHeader(ctx, &p.BlockHash)
	if err != nil {
		if ctx.Err() != nil || !errors.Is(err, ErrNotInChain) {
			return nil, &ProofError{StepChain, err}
		}
		return nil, perr(StepBlockHash, "block %s is unknown to the chain source: %w", p.BlockHash, err)
	}
	if h := hdr.BlockHash(); h != p.BlockHash {
		return nil, perr(StepChain, "chain source returned header %s for block %s", h, p.BlockHash)
	}
	if hdr.MerkleRoot != mr {
		return nil, perr(StepTxBranch, "txid %s with its branch at position %d leads to merkle root %s, block %s has %s (branch or position altered)",
			p.Txid, p.TxIndex, mr, p.BlockHash, hdr.MerkleRoot)
	}
	if p.Height > 1<<31-1 {
		return nil, perr(StepHeight, "height %d out of range", p.Height)
	}
	at, err := chain.BlockHash(ctx, int32(p.Height))
	if err != nil {
		if ctx.Err() != nil || !errors.Is(err, ErrNotInChain) {
			return nil, &ProofError{StepChain, err}
		}
		return nil, perr(StepHeight, "best chain has no block at height %d: %w", p.Height, err)
	}
	if *at != p.BlockHash {
		return nil, perr(StepHeight, "best chain has block %s at height %d, not %s (wrong height, or the block was reorganised out)", at, p.Height, p.BlockHash)
	}
	best, err := chain.BestHeight(ctx)
	if err != nil {
		return nil, &ProofError{StepChain, err}
	}
	return &Anchored{
		Claim: c, ClaimID: c.ID, Root: hex.EncodeToString(root[:]), Txid: p.Txid.String(),
		BlockHash: p.BlockHash.String(), Height: int32(p.Height), TxIndex: p.TxIndex,
		LeafIndex: p.LeafIndex, LeafCount: p.LeafCount, Confirmations: best - int32(p.Height) + 1,
	}, nil
}
