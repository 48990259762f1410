// Package identity holds anchorchat's identity layer: the user's secp256k1
// key (kept in memory only, stored on disk only as a NIP-49 ncryptsec),
// the passphrase policy, handles and handle claim events, NIP-05 serving
// and resolving, and the profile events the node publishes.
//
// Nothing in this package ever logs or formats a secret: Key redacts itself
// in every fmt verb and in log/slog, and errors never carry key material or
// passphrases.
package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip19"
	"github.com/nbd-wtf/go-nostr/nip49"
)

// Errors about key material. They never contain the key itself.
var (
	// ErrInvalidSecretKey reports a secret key that is not 32 bytes in [1, n-1].
	ErrInvalidSecretKey = errors.New("identity: invalid secret key")
	// ErrInvalidPublicKey reports a public key that is not a valid x-only point.
	ErrInvalidPublicKey = errors.New("identity: invalid public key")
	// ErrKeyWiped reports use of a Key after Wipe.
	ErrKeyWiped = errors.New("identity: key has been wiped")
)

// redacted is what every formatting of a Key shows instead of the secret.
const redacted = "[secret redacted]"

// Key is a secp256k1 secret key held in memory, with its BIP-340 x-only
// public key. It implements nostr.Signer. Its zero value is not usable;
// build one with GenerateKey or one of the Key* import functions.
//
// A Key never reveals its secret through fmt (every verb, including %v, %+v,
// %#v, %x and %s), log/slog (LogValue) or encoding/json (no exported
// fields). The only ways out are the explicit Nsec, SecretHex and Ncryptsec
// methods.
type Key struct {
	s   *secretBox
	pub string // 64 lowercase hex, x-only
}

// secretBox holds the secret; Key copies share it (so Wipe wipes all).
type secretBox struct {
	mu    sync.RWMutex
	b     [32]byte
	wiped bool
}

// Format redacts a secretBox too, should anything ever print one.
func (*secretBox) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

var _ nostr.Signer = (*Key)(nil)

// GenerateKey returns a fresh random key from crypto/rand.
func GenerateKey() (*Key, error) {
	var b [32]byte
	for range 16 {
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("identity: generate key: %w", err)
		}
		k, err := KeyFromBytes(b[:])
		clear(b[:])
		if err == nil {
			return k, nil
		}
	}
	return nil, errors.New("identity: generate key: no valid scalar after 16 tries")
}

// KeyFromBytes builds a Key from a 32-byte big-endian secret. The caller's
// slice is copied, not retained; the caller should clear it.
func KeyFromBytes(secret []byte) (*Key, error) {
	if len(secret) != 32 {
		return nil, fmt.Errorf("%w: need 32 bytes, got %d", ErrInvalidSecretKey, len(secret))
	}
	var s btcec.ModNScalar
	if overflow := s.SetByteSlice(secret); overflow || s.IsZero() {
		s.Zero()
		return nil, fmt.Errorf("%w: not in [1, n-1]", ErrInvalidSecretKey)
	}
	priv := btcec.PrivKeyFromScalar(&s)
	k := &Key{s: &secretBox{}, pub: hex.EncodeToString(schnorr.SerializePubKey(priv.PubKey()))}
	copy(k.s.b[:], secret)
	priv.Zero()
	s.Zero()
	return k, nil
}

// KeyFromHex imports a secret key given as 64 hex characters.
func KeyFromHex(secretHex string) (*Key, error) {
	secretHex = strings.TrimSpace(secretHex)
	if len(secretHex) != 64 {
		return nil, fmt.Errorf("%w: hex secret must be 64 characters, got %d", ErrInvalidSecretKey, len(secretHex))
	}
	b, err := hex.DecodeString(secretHex)
	if err != nil {
		return nil, fmt.Errorf("%w: not hex", ErrInvalidSecretKey)
	}
	defer clear(b)
	return KeyFromBytes(b)
}

// KeyFromNsec imports a NIP-19 nsec.
func KeyFromNsec(nsec string) (*Key, error) {
	nsec = strings.TrimSpace(nsec)
	prefix, v, err := decodeNIP19(nsec, "nsec")
	if err != nil {
		// The bech32 error text never contains the input, but be safe:
		// report only that decoding failed.
		return nil, fmt.Errorf("%w: not a valid nsec (bech32 decoding failed)", ErrInvalidSecretKey)
	}
	if prefix != "nsec" {
		return nil, fmt.Errorf("%w: expected an nsec, got %q", ErrInvalidSecretKey, prefix)
	}
	return KeyFromHex(v.(string))
}

// KeyFromNcryptsec decrypts a NIP-49 ncryptsec with passphrase. A wrong
// passphrase yields an error wrapping ErrWrongPassphrase. It runs scrypt
// (at the cost named inside the ncryptsec, refused above MaxLogN) and can
// take seconds; see Keystore for a context-aware variant.
func KeyFromNcryptsec(ncryptsec, passphrase string) (*Key, error) {
	ncryptsec = strings.TrimSpace(ncryptsec)
	if _, err := NcryptsecLogN(ncryptsec); err != nil {
		return nil, err
	}
	b, err := nip49.DecryptToBytes(ncryptsec, passphrase)
	if err != nil {
		// The envelope parsed: the only failure left is authentication,
		// i.e. a wrong passphrase (or a tampered ciphertext).
		return nil, fmt.Errorf("%w (or the ncryptsec is corrupted)", ErrWrongPassphrase)
	}
	defer clear(b)
	return KeyFromBytes(b)
}

// ParseSecretKey imports a secret in any accepted plain form: 64 hex
// characters or an nsec. For an ncryptsec use KeyFromNcryptsec.
func ParseSecretKey(s string) (*Key, error) {
	s = strings.TrimSpace(s)
	switch {
	case strings.HasPrefix(s, "nsec1"):
		return KeyFromNsec(s)
	case strings.HasPrefix(s, "ncryptsec1"):
		return nil, fmt.Errorf("%w: an ncryptsec needs its passphrase (use KeyFromNcryptsec)", ErrInvalidSecretKey)
	default:
		return KeyFromHex(s)
	}
}

// PublicKey returns the x-only public key as 64 lowercase hex characters.
func (k Key) PublicKey() string { return k.pub }

// Npub returns the NIP-19 npub of the public key.
func (k Key) Npub() string {
	s, err := nip19.EncodePublicKey(k.pub)
	if err != nil { // cannot happen: pub is always 32 bytes of hex
		return ""
	}
	return s
}

// Fingerprint returns a short display form of the public key: its first 10
// bytes as five upper-case groups of four hex digits, e.g.
// "7E7E 9C42 A91B FEF1 9FA9". It is for people comparing keys by eye, not
// a security boundary.
func (k Key) Fingerprint() string { return Fingerprint(k.pub) }

// Fingerprint formats the first 10 bytes of a hex public key in groups of
// four upper-case hex digits. It returns "" for malformed input.
func Fingerprint(pubHex string) string {
	if len(pubHex) < 20 {
		return ""
	}
	if _, err := hex.DecodeString(pubHex[:20]); err != nil {
		return ""
	}
	p := strings.ToUpper(pubHex[:20])
	return p[0:4] + " " + p[4:8] + " " + p[8:12] + " " + p[12:16] + " " + p[16:20]
}

// withSecret runs f with the raw secret under the read lock.
func (k *Key) withSecret(f func(secret []byte) error) error {
	if k == nil || k.s == nil {
		return ErrKeyWiped
	}
	k.s.mu.RLock()
	defer k.s.mu.RUnlock()
	if k.s.wiped {
		return ErrKeyWiped
	}
	return f(k.s.b[:])
}

// Nsec exports the secret as a NIP-19 nsec. This is the plain secret: only
// call it on an explicit user request (e.g. `id export --nsec`) and never
// log the result.
func (k *Key) Nsec() (string, error) {
	var out string
	err := k.withSecret(func(s []byte) error {
		var err error
		out, err = nip19.EncodePrivateKey(hex.EncodeToString(s))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("identity: encode nsec: %w", err)
	}
	return out, nil
}

// SecretHex exports the secret as 64 hex characters. Same warning as Nsec.
func (k *Key) SecretHex() (string, error) {
	var out string
	err := k.withSecret(func(s []byte) error { out = hex.EncodeToString(s); return nil })
	return out, err
}

// Ncryptsec encrypts the secret as a NIP-49 ncryptsec at scrypt cost
// 2^logN, with key security byte 0x02 ("client does not track"). It takes
// as long as an unlock at that cost.
func (k *Key) Ncryptsec(passphrase string, logN uint8) (string, error) {
	if err := checkLogN(logN); err != nil {
		return "", err
	}
	if passphrase == "" {
		return "", fmt.Errorf("%w: empty", ErrWeakPassphrase)
	}
	var out string
	err := k.withSecret(func(s []byte) error {
		var err error
		out, err = nip49.EncryptBytes(s, passphrase, logN, nip49.ClientDoesNotTrackThisData)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("identity: nip49 encrypt: %w", err)
	}
	return out, nil
}

// Sign signs evt in place (sets PubKey, ID and Sig) with BIP-340 through
// go-nostr (libsecp256k1 when built with -tags libsecp256k1).
func (k *Key) Sign(evt *nostr.Event) error {
	err := k.withSecret(func(s []byte) error {
		// go-nostr's Sign takes the secret as hex; the string is
		// short-lived and never leaves this function.
		return evt.Sign(hex.EncodeToString(s))
	})
	if err != nil {
		return fmt.Errorf("identity: sign event kind %d: %w", evt.Kind, err)
	}
	return nil
}

// SignEvent implements nostr.Signer.
func (k *Key) SignEvent(ctx context.Context, evt *nostr.Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return k.Sign(evt)
}

// GetPublicKey implements nostr.User.
func (k *Key) GetPublicKey(context.Context) (string, error) { return k.pub, nil }

// SignDigest makes a BIP-340 signature of a 32-byte message (for example a
// rotation consent digest) and returns it as 128 hex characters.
func (k *Key) SignDigest(digest [32]byte) (string, error) {
	var sigHex string
	err := k.withSecret(func(s []byte) error {
		priv, _ := btcec.PrivKeyFromBytes(s)
		defer priv.Zero()
		sig, err := schnorr.Sign(priv, digest[:])
		if err != nil {
			return err
		}
		sigHex = hex.EncodeToString(sig.Serialize())
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("identity: bip340 sign: %w", err)
	}
	return sigHex, nil
}

// VerifyDigest checks a BIP-340 signature (128 hex) of a 32-byte message
// by an x-only public key (64 hex).
func VerifyDigest(pubHex string, digest [32]byte, sigHex string) error {
	pb, err := hex.DecodeString(pubHex)
	if err != nil || len(pb) != 32 {
		return fmt.Errorf("%w: %q", ErrInvalidPublicKey, pubHex)
	}
	pk, err := schnorr.ParsePubKey(pb)
	if err != nil {
		return fmt.Errorf("%w: %q: %w", ErrInvalidPublicKey, pubHex, err)
	}
	sb, err := hex.DecodeString(sigHex)
	if err != nil || len(sb) != 64 {
		return errors.New("identity: signature is not 64 bytes of hex")
	}
	sig, err := schnorr.ParseSignature(sb)
	if err != nil {
		return fmt.Errorf("identity: malformed signature: %w", err)
	}
	if !sig.Verify(digest[:], pk) {
		return errors.New("identity: signature does not verify")
	}
	return nil
}

// Wipe zeroes the secret; the Key can no longer sign or export.
func (k *Key) Wipe() {
	if k == nil || k.s == nil {
		return
	}
	k.s.mu.Lock()
	defer k.s.mu.Unlock()
	clear(k.s.b[:])
	k.s.wiped = true
}

// String shows the npub and fingerprint, never the secret.
func (k Key) String() string {
	return "Key(" + k.Npub() + ", " + redacted + ")"
}

// GoString redacts the secret for %#v.
func (k Key) GoString() string { return "identity." + k.String() }

// Format redacts the secret for every fmt verb (%v, %+v, %#v, %s, %x, %q...).
func (k Key) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(k.GoString()))
		return
	}
	_, _ = f.Write([]byte(k.String()))
}

// LogValue makes slog show the public identity only.
func (k Key) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("npub", k.Npub()),
		slog.String("fingerprint", k.Fingerprint()),
		slog.String("secret", redacted),
	)
}

// MarshalText makes encoding/json, encoding/xml and friends print the npub.
func (k Key) MarshalText() ([]byte, error) { return []byte(k.Npub()), nil }

// sha256Sum hashes the concatenation of parts.
func sha256Sum(parts ...[]byte) [32]byte {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}
