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
