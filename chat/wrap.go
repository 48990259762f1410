// Package chat implements NIP-17 private conversations for an anchorchat
// node: wrapping and unwrapping (kind 14/15 rumors, kind 13 seals, kind 1059
// gift wraps), a Service that sends through a persistent outbox and receives
// from the user's inbox relays into a SQLite message store, disappearing
// messages (NIP-40), encrypted file messages with a Blossom-style blob store,
// deletion and small groups, and contact resolution.
//
// The wire format is described in docs/messaging.md.
package chat

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/anchorchat/anchorchat/internal/eventsig"
	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip44"
)

// Event kinds used by NIP-17 and NIP-59.
const (
	KindDeletion    = 5
	KindSeal        = 13
	KindChatMessage = 14
	KindFileMessage = 15
	KindGiftWrap    = 1059
	KindDMRelayList = 10050
	KindBlobAuth    = 24242
)

// Tip rumor kinds (docs/protocol.md, "Tip messages"). The chat service
// stores them in their conversation like texts and hands them to the
// handler registered with Service.Handle (package payments).
const (
	KindTipRequest = 3790 // ["tip", id], ["amount", msat]; content: memo
	KindTipInvoice = 3791 // ["tip", id], ["e", request id], ["bolt11", invoice]
	KindTipReceipt = 3792 // ["tip", id], ["e", invoice id], ["preimage", hex], ["payment_hash", hex]
	KindTipStatus  = 3793 // ["tip", id], ["state", settled|failed|cancelled]; content: reason
)

// IsTipKind reports whether kind is one of the tip rumor kinds.
func IsTipKind(kind int) bool { return kind >= KindTipRequest && kind <= KindTipStatus }

// MaxBackdate is how far NIP-59 lets seal and wrap timestamps lie in the past.
const MaxBackdate = 48 * time.Hour

// MaxFutureSkew is how far ahead of our clock a received rumor's created_at
// may be. The rumor is unsigned and its time is the sender's word: one
// dated later would sort after every message of its conversation for as
// long as that date is ahead, so the service stores it as received at the
// moment it arrived (clamped, not dropped: a sender whose clock runs fast
// still gets through).
const MaxFutureSkew = 5 * time.Minute

// MaxParticipants bounds a conversation: the rumor's author and its p tags,
// ourselves included. The service drops a received rumor with more than
// MaxParticipants-1 p tags (ErrTooManyParticipants; each participant costs
// a row, a lookup and, for a reply, a gift wrap), and Send refuses more
// than MaxParticipants-1 recipients.
const MaxParticipants = 100

// Unwrap errors. Every failure of Unwrap wraps exactly one of these.
var (
	// ErrNotForUs: the gift wrap is p-tagged to someone else; it is ignored.
	ErrNotForUs = errors.New("chat: gift wrap is not addressed to us")
	// ErrImpersonation: the seal was signed by a key other than the rumor's
	// author; someone tried to speak in another person's name.
	ErrImpersonation = errors.New("chat: seal pubkey differs from rumor pubkey (impersonation)")
	// ErrMalformed: wrong kind, bad signature, undecryptable or invalid JSON.
	ErrMalformed = errors.New("chat: malformed gift wrap")
	// ErrExpired: the wrap, seal or rumor carries a NIP-40 expiration in the past.
	ErrExpired = errors.New("chat: message expired")
)

// ErrTooManyParticipants: a received rumor names more participants than
// MaxParticipants; the service drops it (Unwrap itself does not check).
var ErrTooManyParticipants = fmt.Errorf("chat: more than %d participants", MaxParticipants)

// Wrapper seals and unwraps NIP-17 messages for one key. It caches NIP-44
// conversation keys per counterparty (ECDH is the expensive part). Safe for
// concurrent use.
type Wrapper struct {
	sk, pk string

	// Now is the clock for rumor and expiry checks (default time.Now).
	Now func() time.Time

	past func(now time.Time) nostr.Timestamp // the seal's and wrap's created_at (randomPast; tests fix it)

	mu       sync.Mutex
	convKeys map[string][32]byte
}

// NewWrapper returns a Wrapper for the secret key secretHex. The secret is
// kept in memory only and never logged.
func NewWrapper(secretHex string) (*Wrapper, error) {
	pk, err := nostr.GetPublicKey(secretHex)
	if err != nil {
		return nil, fmt.Errorf("chat: bad secret key: %w", err)
	}
	return &Wrapper{sk: secretHex, pk: pk, Now: time.Now, past: randomPast, convKeys: make(map[string][32]byte)}, nil
}

// PublicKey returns the wrapper's hex public key.
func (w *Wrapper) PublicKey() string { return w.pk }

// String never shows the secret.
func (w *Wrapper) String() string { return "chat.Wrapper{" + w.pk + "}" }

func (w *Wrapper) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

func (w *Wrapper) convKey(pub string) ([32]byte, error) {
	w.mu.Lock()
	k, ok := w.convKeys[pub]
	w.mu.Unlock()
	if ok {
		return k, nil
	}
	k, err := nip44.GenerateConversationKey(pub, w.sk)
	if err != nil {
		return k, err
	}
	w.mu.Lock()
	if len(w.convKeys) > 4096 {
		clear(w.convKeys)
	}
	w.convKeys[pub] = k
	w.mu.Unlock()
	return k, nil
}

// NewRumor builds an unsigned event (a rumor) by this wrapper's key with
// its id set. tags is used as given (add the p tags yourself).
func (w *Wrapper) NewRumor(kind int, content string, tags nostr.Tags, at time.Time) nostr.Event {
	if tags == nil {
		tags = nostr.Tags{}
	}
	r := nostr.Event{Kind: kind, Content: content, Tags: tags, CreatedAt: nostr.Timestamp(at.Unix()), PubKey: w.pk}
	r.ID = r.GetID()
	return r
}

// randomPast returns now minus a uniformly random offset in [0, MaxBackdate),
// as NIP-59 asks for seals and wraps.
func randomPast(now time.Time) nostr.Timestamp {
	var b [8]byte
	_, _ = rand.Read(b[:])
	off := binary.LittleEndian.Uint64(b[:]) % uint64(MaxBackdate/time.Second)
	return nostr.Timestamp(now.Unix() - int64(off))
}

func expirationTag(exp int64) nostr.Tag { return nostr.Tag{"expiration", strconv.FormatInt(exp, 10)} }

// Wrap seals rumor (which must be by this key, unsigned) for recipient and
// gift-wraps it with a fresh one-time key. expiration (unix seconds, 0 for
// none) becomes a NIP-40 tag on the seal and the wrap; put it on the rumor
// yourself before computing its id (Service does).
func (w *Wrapper) Wrap(rumor nostr.Event, recipient string, expiration int64) (nostr.Event, error) {
	if rumor.PubKey != w.pk {
		return nostr.Event{}, fmt.Errorf("chat: rumor pubkey %s is not the wrapper's key", rumor.PubKey)
	}
	if !nostr.IsValidPublicKey(recipient) {
		return nostr.Event{}, fmt.Errorf("chat: invalid recipient pubkey %q", recipient)
	}
	rumor.Sig = ""
	rumor.ID = rumor.GetID()
	return w.wrapRumorJSON(rumor.String(), recipient, expiration)
}

// wrapRumorJSON is Wrap's two layers around a rumor already serialized:
// the seal, signed by this key, then the gift wrap, signed by a one-time
// key. (The fuzz tests hand it rumors no honest sender would write.)
func (w *Wrapper) wrapRumorJSON(rumorJSON, recipient string, expiration int64) (nostr.Event, error) {
	ck, err := w.convKey(recipient)
	if err != nil {
		return nostr.Event{}, fmt.Errorf("chat: conversation key: %w", err)
	}
	rumorCT, err := nip44.Encrypt(rumorJSON, ck)
	if err != nil {
		return nostr.Event{}, fmt.Errorf("chat: encrypt rumor: %w", err)
	}
	now := w.now()
	seal := nostr.Event{Kind: KindSeal, Content: rumorCT, CreatedAt: w.past(now), Tags: nostr.Tags{}}
	if expiration > 0 {
		seal.Tags = append(seal.Tags, expirationTag(expiration))
	}
	if err := seal.Sign(w.sk); err != nil {
		return nostr.Event{}, fmt.Errorf("chat: sign seal: %w", err)
	}
	return w.giftWrap(seal.String(), recipient, expiration)
}

// giftWrap encrypts a serialized seal to recipient under a fresh one-time
// key and signs the kind 1059 event with it.
func (w *Wrapper) giftWrap(sealJSON, recipient string, expiration int64) (nostr.Event, error) {
	oneTime := nostr.GeneratePrivateKey()
	tk, err := nip44.GenerateConversationKey(recipient, oneTime)
	if err != nil {
		return nostr.Event{}, fmt.Errorf("chat: one-time conversation key: %w", err)
	}
	sealCT, err := nip44.Encrypt(sealJSON, tk)
	if err != nil {
		return nostr.Event{}, fmt.Errorf("chat: encrypt seal: %w", err)
	}
	wrap := nostr.Event{Kind: KindGiftWrap, Content: sealCT, CreatedAt: w.past(w.now()), Tags: nostr.Tags{{"p", recipient}}}
	if expiration > 0 {
		wrap.Tags = append(wrap.Tags, expirationTag(expiration))
	}
	if err := wrap.Sign(oneTime); err != nil {
		return nostr.Event{}, fmt.Errorf("chat: sign wrap: %w", err)
	}
	return wrap, nil
}

// Expiration returns the NIP-40 expiration of evt (0 when absent or unparsable).
func Expiration(evt *nostr.Event) int64 {
	t := evt.Tags.Find("expiration")
	if len(t) < 2 {
		return 0
	}
	v, err := strconv.ParseInt(t[1], 10, 64)
	if err != nil || v < 0 {
		return 0
	}
	return v
}

// Unwrap opens a gift wrap addressed to this key and returns the rumor,
// whose PubKey is the authenticated sender. It refuses a seal whose pubkey
// differs from the rumor's (ErrImpersonation), ignores wraps for someone
// else (ErrNotForUs), and refuses anything expired (ErrExpired).
func (w *Wrapper) Unwrap(wrap *nostr.Event) (*nostr.Event, error) {
	rumor, _, err := w.UnwrapExpiring(wrap)
	return rumor, err
}

// UnwrapExpiring is Unwrap, also returning when the message disappears:
// the earliest NIP-40 expiration of the wrap, the seal and the rumor (unix
// seconds; 0 for none). NIP-17 puts a disappearing message's expiration on
// the gift wrap, so a rumor without one can still be meant to disappear.
func (w *Wrapper) UnwrapExpiring(wrap *nostr.Event) (*nostr.Event, int64, error) {
	rumor, seal, err := w.unwrap(wrap)
	if err != nil {
		return nil, 0, err
	}
	exp := int64(0)
	for _, e := range []int64{Expiration(wrap), Expiration(seal), Expiration(rumor)} {
		if e > 0 && (exp == 0 || e < exp) {
			exp = e
		}
	}
	return rumor, exp, nil
}

func (w *Wrapper) unwrap(wrap *nostr.Event) (rumor, seal *nostr.Event, err error) {
	if wrap.Kind != KindGiftWrap {
		return nil, nil, fmt.Errorf("%w: kind %d is not a gift wrap", ErrMalformed, wrap.Kind)
	}
	if wrap.Tags.FindWithValue("p", w.pk) == nil {
		return nil, nil, ErrNotForUs
	}
	if !eventsig.Valid(wrap) {
		return nil, nil, fmt.Errorf("%w: gift wrap signature or id invalid", ErrMalformed)
	}
	now := w.now().Unix()
	if e := Expiration(wrap); e > 0 && e <= now {
		return nil, nil, fmt.Errorf("%w: gift wrap expired at %d", ErrExpired, e)
	}
	tk, err := nip44.GenerateConversationKey(wrap.PubKey, w.sk)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: one-time key: %v", ErrMalformed, err)
	}
	sealJSON, err := nip44.Decrypt(wrap.Content, tk)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: decrypt seal: %v", ErrMalformed, err)
	}
	seal = new(nostr.Event)
	if err := json.Unmarshal([]byte(sealJSON), seal); err != nil {
		return nil, nil, fmt.Errorf("%w: seal is not an event: %v", ErrMalformed, err)
	}
	if seal.Kind != KindSeal {
		return nil, nil, fmt.Errorf("%w: seal kind %d", ErrMalformed, seal.Kind)
	}
	if !eventsig.Valid(seal) {
		return nil, nil, fmt.Errorf("%w: seal signature or id invalid", ErrMalformed)
	}
	if e := Expiration(seal); e > 0 && e <= now {
		return nil, nil, fmt.Errorf("%w: seal expired at %d", ErrExpired, e)
	}
	ck, err := w.convKey(seal.PubKey)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: conversation key: %v", ErrMalformed, err)
	}
	rumorJSON, err := nip44.Decrypt(seal.Content, ck)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: decrypt rumor: %v", ErrMalformed, err)
	}
	rumor = new(nostr.Event)
	if err := json.Unmarshal([]byte(rumorJSON), rumor); err != nil {
		return nil, nil, fmt.Errorf("%w: rumor is not an event: %v", ErrMalformed, err)
	}
	if rumor.PubKey != seal.PubKey {
		return nil, nil, fmt.Errorf("%w: seal by %s, rumor claims %s", ErrImpersonation, seal.PubKey, rumor.PubKey)
	}
	if rumor.Tags == nil {
		rumor.Tags = nostr.Tags{}
	}
	if rumor.ID != "" && !rumor.CheckID() {
		return nil, nil, fmt.Errorf("%w: rumor id does not match its content", ErrMalformed)
	}
	rumor.ID = rumor.GetID()
	rumor.Sig = ""
	if e := Expiration(rumor); e > 0 && e <= now {
		return nil, nil, fmt.Errorf("%w: rumor expired at %d", ErrExpired, e)
	}
	return rumor, seal, nil
}
