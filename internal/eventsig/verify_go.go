//go:build !libsecp256k1 || !cgo

package eventsig

import (
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
)

const backend = "btcec"

type pubkey struct{ key *btcec.PublicKey }

func parsePubkey(pk *[32]byte) (*pubkey, error) {
	k, err := schnorr.ParsePubKey(pk[:])
	if err != nil {
		return nil, err
	}
	return &pubkey{k}, nil
}

func (k *pubkey) verify(sig *[64]byte, hash *[32]byte) bool {
	s, err := schnorr.ParseSignature(sig[:])
	if err != nil {
		return false
	}
	return s.Verify(hash[:], k.key)
}

// batch holds signatures to check one after another (the pure-Go build has
// no call overhead to save).
type batch struct {
	items []batchItem
}

type batchItem struct {
	i    int
	key  *pubkey
	sig  [64]byte
	hash [32]byte
}

func newBatch(n int) *batch { return &batch{items: make([]batchItem, 0, n)} }

func (b *batch) add(i int, k *pubkey, sig *[64]byte, hash *[32]byte) {
	b.items = append(b.items, batchItem{i: i, key: k, sig: *sig, hash: *hash})
}

// run checks each signature and calls valid with the caller index of each that verifies.
func (b *batch) run(valid func(i int)) {
	for j := range b.items {
		it := &b.items[j]
		if it.key.verify(&it.sig, &it.hash) {
			valid(it.i)
		}
	}
}
