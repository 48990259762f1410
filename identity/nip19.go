package identity

import (
	"errors"
	"fmt"
	"strings"

	"github.com/btcsuite/btcd/btcutil/bech32"
	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip19"
)

// ErrNIP19 wraps every NIP-19 decoding failure.
var ErrNIP19 = errors.New("identity: nip19")

// decodeNIP19 decodes s with go-nostr only if it is an entity of kind want
// ("npub", "nsec", "nprofile", "nevent"); otherwise it returns the kind
// found and a nil value. go-nostr's Decode indexes out of range on some
// malformed entities of other kinds (an naddr whose kind entry is shorter
// than 4 bytes), so those never reach it.
func decodeNIP19(s, want string) (prefix string, v any, err error) {
	prefix, _, err = bech32.DecodeNoLimit(s)
	if err != nil || prefix != want {
		return prefix, nil, err
	}
	return nip19.Decode(s)
}

// EncodeNpub encodes a hex public key as an npub.
func EncodeNpub(pubHex string) (string, error) {
	if !nostr.IsValidPublicKey(pubHex) {
		return "", fmt.Errorf("%w: %q", ErrInvalidPublicKey, pubHex)
	}
	s, err := nip19.EncodePublicKey(pubHex)
	if err != nil {
		return "", fmt.Errorf("%w: encode npub: %w", ErrNIP19, err)
	}
	return s, nil
}

// DecodeNpub decodes an npub to a hex public key (and checks it is a point).
func DecodeNpub(npub string) (string, error) {
	prefix, v, err := decodeNIP19(strings.TrimSpace(npub), "npub")
	if err != nil {
		return "", fmt.Errorf("%w: decode npub: %w", ErrNIP19, err)
	}
	if prefix != "npub" {
		return "", fmt.Errorf("%w: expected npub, got %q", ErrNIP19, prefix)
	}
	pub := v.(string)
	if !nostr.IsValidPublicKey(pub) {
		return "", fmt.Errorf("%w: npub is not a valid secp256k1 x-only key", ErrInvalidPublicKey)
	}
	return pub, nil
}

// EncodeNsec encodes a hex secret as an nsec. Prefer Key.Nsec; this exists
// for tooling and tests. Never log the result.
func EncodeNsec(secretHex string) (string, error) {
	k, err := KeyFromHex(secretHex)
	if err != nil {
		return "", err
	}
	defer k.Wipe()
	return k.Nsec()
}

// EncodeNprofile encodes a public key and relay hints as an nprofile.
func EncodeNprofile(pubHex string, relays []string) (string, error) {
	if !nostr.IsValidPublicKey(pubHex) {
		return "", fmt.Errorf("%w: %q", ErrInvalidPublicKey, pubHex)
	}
	s, err := nip19.EncodeProfile(pubHex, relays)
	if err != nil {
		return "", fmt.Errorf("%w: encode nprofile: %w", ErrNIP19, err)
	}
	return s, nil
}

// DecodeNprofile decodes an nprofile.
func DecodeNprofile(s string) (nostr.ProfilePointer, error) {
	prefix, v, err := decodeNIP19(strings.TrimSpace(s), "nprofile")
	if err != nil {
		return nostr.ProfilePointer{}, fmt.Errorf("%w: decode nprofile: %w", ErrNIP19, err)
	}
	if prefix != "nprofile" {
		return nostr.ProfilePointer{}, fmt.Errorf("%w: expected nprofile, got %q", ErrNIP19, prefix)
	}
	pp := v.(nostr.ProfilePointer)
	if !nostr.IsValidPublicKey(pp.PublicKey) {
		return nostr.ProfilePointer{}, fmt.Errorf("%w: nprofile key is not a valid point", ErrInvalidPublicKey)
	}
	return pp, nil
}

// EncodeNevent encodes an event id with relay hints and an optional author
// (hex, or "" for none) as an nevent.
func EncodeNevent(idHex string, relays []string, authorHex string) (string, error) {
	if !nostr.IsValid32ByteHex(idHex) {
		return "", fmt.Errorf("%w: event id must be 64 lowercase hex", ErrNIP19)
	}
	s, err := nip19.EncodeEvent(idHex, relays, authorHex)
	if err != nil {
		return "", fmt.Errorf("%w: encode nevent: %w", ErrNIP19, err)
	}
	return s, nil
}

// DecodeNevent decodes an nevent.
func DecodeNevent(s string) (nostr.EventPointer, error) {
	prefix, v, err := decodeNIP19(strings.TrimSpace(s), "nevent")
	if err != nil {
		return nostr.EventPointer{}, fmt.Errorf("%w: decode nevent: %w", ErrNIP19, err)
	}
	if prefix != "nevent" {
		return nostr.EventPointer{}, fmt.Errorf("%w: expected nevent, got %q", ErrNIP19, prefix)
	}
	return v.(nostr.EventPointer), nil
}

// ParsePublicKey accepts a public key as hex, npub or nprofile and returns
// it as hex. It is what a CLI should use for "who" arguments.
func ParsePublicKey(s string) (string, error) {
	s = strings.TrimSpace(s)
	switch {
	case strings.HasPrefix(s, "npub1"):
		return DecodeNpub(s)
	case strings.HasPrefix(s, "nprofile1"):
		pp, err := DecodeNprofile(s)
		return pp.PublicKey, err
	case strings.HasPrefix(s, "nsec1"), strings.HasPrefix(s, "ncryptsec1"):
		return "", fmt.Errorf("%w: that is a secret key, not a public key — do not share it", ErrInvalidPublicKey)
	}
	p := strings.ToLower(s)
	if !nostr.IsValidPublicKey(p) {
		return "", fmt.Errorf("%w: want 64 hex characters, npub or nprofile", ErrInvalidPublicKey)
	}
	return p, nil
}
