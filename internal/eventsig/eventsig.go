// Package eventsig checks a Nostr event's id and BIP-340 signature for the
// relay's hot path: the NIP-01 serialization is built once into a pooled
// buffer and hashed once for both checks.
//
// Two implementations exist: with the build tag libsecp256k1 (and cgo), the
// signature is checked by the libsecp256k1 that go-nostr compiles into the
// binary, and parsed x-only public keys are cached, so an author who
// publishes many events pays for lifting their key onto the curve once;
// otherwise by btcec's pure-Go BIP-340 code, whose Verify parses the key
// again on every call, so there the cache saves nothing. Both agree with
// nostr.Event.CheckSignature; the tests hold them to that.
package eventsig

import (
	"crypto/sha256"
	"errors"
	"strconv"
	"sync"

	"github.com/nbd-wtf/go-nostr"
)

var (
	// ErrID means the event's id is not the hash of its NIP-01 serialization.
	ErrID = errors.New("event id does not match its content")
	// ErrSig means the signature is malformed or does not verify.
	ErrSig = errors.New("bad signature")
)

// DefaultCacheSize is how many parsed public keys a Verifier keeps by default.
const DefaultCacheSize = 4096

// Verifier checks events. It is safe for concurrent use.
type Verifier struct {
	mu    sync.RWMutex
	keys  map[[32]byte]*pubkey
	limit int
}

// New returns a Verifier caching up to cacheSize parsed keys (DefaultCacheSize if <= 0).
func New(cacheSize int) *Verifier {
	if cacheSize <= 0 {
		cacheSize = DefaultCacheSize
	}
	return &Verifier{keys: make(map[[32]byte]*pubkey, cacheSize), limit: cacheSize}
}

// Backend names the signature implementation compiled in.
func Backend() string { return backend }

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// Hash returns the sha256 of evt's NIP-01 serialization, i.e. its correct id.
func Hash(evt *nostr.Event) [32]byte {
	bp := bufPool.Get().(*[]byte)
	buf := AppendSerialized((*bp)[:0], evt)
	h := sha256.Sum256(buf)
	if cap(buf) <= 64<<10 {
		*bp = buf
		bufPool.Put(bp)
	}
	return h
}

// CheckID reports whether evt.ID is the lowercase hex of Hash(evt), and returns the hash.
func CheckID(evt *nostr.Event) ([32]byte, bool) {
	h := Hash(evt)
	if len(evt.ID) != 64 {
		return h, false
	}
	const hextable = "0123456789abcdef"
	for i, b := range h {
		if evt.ID[2*i] != hextable[b>>4] || evt.ID[2*i+1] != hextable[b&0x0f] {
			return h, false
		}
	}
	return h, true
}

// shared is the verifier behind Valid.
var shared = New(0)

// Valid reports whether evt's id and signature check, using a shared
// Verifier. Use it, not nostr.Event.CheckSignature, on anything that came
// from outside: in the libsecp256k1 build go-nostr's CheckSignature
// hex-decodes the pubkey and signature into fixed-size arrays and panics on
// longer ones; Check refuses them.
func Valid(evt *nostr.Event) bool { return shared.Check(evt) == nil }

// Check verifies evt's id and signature: nil, ErrID or ErrSig.
func (v *Verifier) Check(evt *nostr.Event) error {
	h, ok := CheckID(evt)
	if !ok {
		return ErrID
	}
	return v.CheckSig(evt, h)
}

// CheckSig verifies evt's signature over hash, which the caller computed
// with Hash or CheckID (it is not recomputed): nil or ErrSig.
func (v *Verifier) CheckSig(evt *nostr.Event, hash [32]byte) error {
	key, sig, ok := v.decode(evt)
	if !ok || !key.verify(&sig, &hash) {
		return ErrSig
	}
	return nil
}

// decode returns evt's parsed public key and its signature's bytes, or false
// if either is malformed or the key is not on the curve.
func (v *Verifier) decode(evt *nostr.Event) (*pubkey, [64]byte, bool) {
	var pk [32]byte
	var sig [64]byte
	if len(evt.PubKey) != 64 || len(evt.Sig) != 128 {
		return nil, sig, false
	}
	// NIP-01 writes both in lowercase hex; hex.Decode would take uppercase
	// too, and an uppercase pubkey, serialized as is, is another id.
	if !decodeLowerHex(pk[:], evt.PubKey) || !decodeLowerHex(sig[:], evt.Sig) {
		return nil, sig, false
	}
	key, err := v.key(pk, evt.Kind != nostr.KindGiftWrap)
	if err != nil {
		return nil, sig, false
	}
	return key, sig, true
}

// unhex maps a lowercase hex digit to its value, anything else to 0xff.
var unhex = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range "0123456789abcdef" {
		t[c] = byte(i)
	}
	return t
}()

// decodeLowerHex decodes src, 2*len(dst) lowercase hex digits, into dst.
func decodeLowerHex(dst []byte, src string) bool {
	if len(src) != 2*len(dst) {
		return false
	}
	for i := range dst {
		hi, lo := unhex[src[2*i]], unhex[src[2*i+1]]
		if hi|lo == 0xff {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

// CheckSigs verifies each evts[i]'s signature over hashes[i], like CheckSig,
// and sets errs[i] to nil or ErrSig. The three slices must be equally long.
// With libsecp256k1 the whole batch is checked in one cgo call: each call
// into C is a system call to the Go scheduler, which hands the goroutine's
// processor to another thread when a call runs longer than one of its
// rounds (every signature check does), so one call per batch rather than one
// per event saves those thread switches. Each signature is still checked
// alone; this is not BIP-340 batch verification.
func (v *Verifier) CheckSigs(evts []*nostr.Event, hashes [][32]byte, errs []error) {
	if len(evts) != len(hashes) || len(evts) != len(errs) {
		panic("eventsig: CheckSigs with slices of different lengths")
	}
	b := newBatch(len(evts))
	for i, evt := range evts {
		errs[i] = ErrSig
		if key, sig, ok := v.decode(evt); ok {
			b.add(i, key, &sig, &hashes[i])
		}
	}
	b.run(func(i int) { errs[i] = nil })
}

// key returns the parsed key for pk, from the cache or parsed (and cached if
// keep). A key that does not parse is not cached. Gift wraps are not cached:
// NIP-59 signs each with a fresh one-time key, which would only push real
// authors out.
func (v *Verifier) key(pk [32]byte, keep bool) (*pubkey, error) {
	v.mu.RLock()
	k := v.keys[pk]
	v.mu.RUnlock()
	if k != nil {
		return k, nil
	}
	k, err := parsePubkey(&pk)
	if err != nil || !keep {
		return k, err
	}
	v.mu.Lock()
	if len(v.keys) >= v.limit {
		clear(v.keys) // cheap, and a personal relay's writers repopulate it at once
	}
	v.keys[pk] = k
	v.mu.Unlock()
	return k, nil
}

// AppendSerialized appends evt's NIP-01 serialization
// [0,<pubkey>,<created_at>,<kind>,<tags>,<content>] to dst.
func AppendSerialized(dst []byte, evt *nostr.Event) []byte {
	dst = append(dst, `[0,"`...)
	dst = append(dst, evt.PubKey...)
	dst = append(dst, `",`...)
	dst = strconv.AppendInt(dst, int64(evt.CreatedAt), 10)
	dst = append(dst, ',')
	dst = strconv.AppendInt(dst, int64(evt.Kind), 10)
	dst = append(dst, ',')
	dst = AppendTags(dst, evt.Tags)
	dst = append(dst, ',')
	dst = AppendString(dst, evt.Content)
	return append(dst, ']')
}

// AppendTags appends tags as a JSON array of arrays of strings, escaped as NIP-01 says.
func AppendTags(dst []byte, tags nostr.Tags) []byte {
	dst = append(dst, '[')
	for i, tag := range tags {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '[')
		for j, s := range tag {
			if j > 0 {
				dst = append(dst, ',')
			}
			dst = AppendString(dst, s)
		}
		dst = append(dst, ']')
	}
	return append(dst, ']')
}

// AppendString appends s as a JSON string escaped the way NIP-01 specifies
// for the id serialization: \" \\ \b \t \n \f \r, other control characters
// as \u00XX, everything else (including non-ASCII UTF-8) verbatim.
func AppendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\r':
			dst = append(dst, '\\', 'r')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
