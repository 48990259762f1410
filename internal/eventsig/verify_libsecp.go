//go:build libsecp256k1 && cgo

package eventsig

/*
#include <stddef.h>

// The libsecp256k1 that go-nostr compiles into the binary under the same
// build tag (github.com/nbd-wtf/go-nostr/signature_libsecp256k1.go): these
// are its public declarations (include/secp256k1.h, secp256k1_extrakeys.h,
// secp256k1_schnorrsig.h), resolved when the binary is linked. Because they
// are defined in another package's C code, the go tool links such binaries
// externally (with gcc), which it does for cgo binaries anyway; forcing
// -linkmode=internal would fail.
typedef struct secp256k1_context_struct secp256k1_context;
typedef struct secp256k1_xonly_pubkey { unsigned char data[64]; } secp256k1_xonly_pubkey;
extern secp256k1_context *secp256k1_context_create(unsigned int flags);
extern int secp256k1_xonly_pubkey_parse(const secp256k1_context *ctx, secp256k1_xonly_pubkey *pubkey, const unsigned char *input32);
extern int secp256k1_schnorrsig_verify(const secp256k1_context *ctx, const unsigned char *sig64, const unsigned char *msg, size_t msglen, const secp256k1_xonly_pubkey *pubkey);

#define ANCHORCHAT_SECP256K1_CONTEXT_NONE 1

// One signature of a batch: everything the check reads, by value, so that a
// batch is one Go allocation holding no Go pointers (which cgo allows).
typedef struct anchorchat_sig {
	unsigned char sig[64];
	unsigned char msg[32];
	secp256k1_xonly_pubkey pk;
	int ok;
} anchorchat_sig;

static void anchorchat_verify_batch(const secp256k1_context *ctx, anchorchat_sig *b, size_t n) {
	for (size_t i = 0; i < n; i++) {
		b[i].ok = secp256k1_schnorrsig_verify(ctx, b[i].sig, b[i].msg, 32, &b[i].pk);
	}
}
*/
import "C"

import (
	"errors"
	"unsafe"

	_ "github.com/nbd-wtf/go-nostr" // links libsecp256k1 (build tag libsecp256k1)
)

const backend = "libsecp256k1"

// ctx is read-only after creation, so concurrent verifications may share it.
var ctx = func() *C.secp256k1_context {
	c := C.secp256k1_context_create(C.ANCHORCHAT_SECP256K1_CONTEXT_NONE)
	if c == nil {
		panic("eventsig: secp256k1_context_create failed")
	}
	return c
}()

type pubkey struct{ xonly C.secp256k1_xonly_pubkey }

func parsePubkey(pk *[32]byte) (*pubkey, error) {
	k := new(pubkey)
	if C.secp256k1_xonly_pubkey_parse(ctx, &k.xonly, (*C.uchar)(unsafe.Pointer(&pk[0]))) != 1 {
		return nil, errors.New("eventsig: public key is not on the curve")
	}
	return k, nil
}

func (k *pubkey) verify(sig *[64]byte, hash *[32]byte) bool {
	return C.secp256k1_schnorrsig_verify(ctx, (*C.uchar)(unsafe.Pointer(&sig[0])), (*C.uchar)(unsafe.Pointer(&hash[0])), 32, &k.xonly) == 1
}

// batch holds signatures for one cgo call, and which caller index each is.
type batch struct {
	sigs []C.anchorchat_sig
	idx  []int
}

func newBatch(n int) *batch {
	return &batch{sigs: make([]C.anchorchat_sig, 0, n), idx: make([]int, 0, n)}
}

func (b *batch) add(i int, k *pubkey, sig *[64]byte, hash *[32]byte) {
	var s C.anchorchat_sig
	*(*[64]byte)(unsafe.Pointer(&s.sig)) = *sig
	*(*[32]byte)(unsafe.Pointer(&s.msg)) = *hash
	s.pk = k.xonly
	b.sigs = append(b.sigs, s)
	b.idx = append(b.idx, i)
}

// run checks the batch in one call and calls valid with the caller index of
// each signature that verifies.
func (b *batch) run(valid func(i int)) {
	if len(b.sigs) == 0 {
		return
	}
	C.anchorchat_verify_batch(ctx, &b.sigs[0], C.size_t(len(b.sigs)))
	for j := range b.sigs {
		if b.sigs[j].ok == 1 {
			valid(b.idx[j])
		}
	}
}
