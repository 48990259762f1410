package identity

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/anchorchat/anchorchat/internal/eventsig"
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/nbd-wtf/go-nostr"
)

// Event kinds of the handle-claim protocol (docs/protocol.md, "Handle
// claims"). Both are regular (1000-9999) kinds: relays keep every event, so
// the whole history of a handle stays retrievable and every claim has a
// stable id, which is what the anchoring layer commits to in its Merkle tree.
// Neither number is in the NIPs' kind registry (checked against the
// nostr-protocol/nips README list) nor in the NIP-90 5000-7000 DVM range.
const (
	// KindHandleClaim: a first claim of a handle, or a rotation (a claim
	// with a "prev" tag) that moves it to a new key or updates its data.
	KindHandleClaim = 3780
	// KindHandleRevocation: the current key gives the handle up.
	KindHandleRevocation = 3781
)

// Limits on claim contents.
const (
	MaxClaimRelays  = 10
	MaxRelayURLLen  = 256
	MaxRevokeReason = 280
	// ConsentDomain separates rotation-consent digests from any other
	// signed message.
	ConsentDomain = "anchorchat:handle-rotation:v1"
)

// Claim validation errors. Every rejection wraps exactly one of these, with
// the precise reason in the message.
var (
	// ErrInvalidClaim: structure (kind, tags, handle syntax, ids).
	ErrInvalidClaim = errors.New("identity: invalid claim")
	// ErrClaimSignature: the event id or signature does not match its
	// pubkey, i.e. it was altered or signed by another key.
	ErrClaimSignature = errors.New("identity: claim signature invalid")
	// ErrMissingConsent: a rotation without the old key's consent tag.
	ErrMissingConsent = errors.New("identity: rotation lacks the old key's consent")
	// ErrBadConsent: the consent signature does not verify for the old key.
	ErrBadConsent = errors.New("identity: rotation consent signature invalid")
	// ErrNotCurrentKey: a rotation or revocation by a key that does not
	// hold the handle at that point of the chain.
	ErrNotCurrentKey = errors.New("identity: not signed by the current key")
	// ErrBrokenChain: the events do not form one linear chain.
	ErrBrokenChain = errors.New("identity: broken claim chain")
)

// ClaimType says what a validated claim event is.
type ClaimType int

// Claim types.
const (
	ClaimFirst ClaimType = iota + 1
	ClaimRotation
	ClaimRevocation
)

func (t ClaimType) String() string {
	switch t {
	case ClaimFirst:
		return "claim"
	case ClaimRotation:
		return "rotation"
	case ClaimRevocation:
		return "revocation"
	}
	return fmt.Sprintf("ClaimType(%d)", int(t))
}

// Claim is a validated handle-claim event.
type Claim struct {
	Type      ClaimType
	ID        string // event id: what the anchoring layer commits to
	PubKey    string // signer (the key that holds the handle after this claim)
	Handle    string
	CreatedAt nostr.Timestamp

	LNNode string   // 33-byte compressed LND node pubkey, hex; "" if absent
	Relays []string // DM relays

	// Rotation only.
	PrevID     string // id of the claim this one replaces
	PrevPubKey string // key that signed PrevID and consents here
	Consent    string // BIP-340 signature by PrevPubKey of RotationConsentDigest

	// Revocation only.
	Revokes string // id of the revoked claim
	Reason  string

	Event *nostr.Event
}

// ClaimParams are the data of a claim or rotation.
type ClaimParams struct {
	Handle    string // normalised by the builder
	LNNode    string // optional 66-hex compressed pubkey
	Relays    []string
	CreatedAt time.Time // zero means now
}

// RotationConsentDigest is the 32-byte message the old key signs (BIP-340)
// to consent to a rotation:
//
//	SHA-256( "anchorchat:handle-rotation:v1" || 0x00 || handle || 0x00 ||
//	         prev_claim_id_hex || 0x00 || new_pubkey_hex )
//
// with handle in canonical form and both hex strings as 64 lowercase ASCII
// characters.
func RotationConsentDigest(handle, prevID, newPubKey string) [32]byte {
	z := []byte{0}
	return sha256Sum([]byte(ConsentDomain), z, []byte(handle), z,
		[]byte(strings.ToLower(prevID)), z, []byte(strings.ToLower(newPubKey)))
}

// SignRotationConsent is what the OLD key does to allow a rotation of the
// claim prevID of handle to newPubKey. It returns the signature hex for
// the "consent" tag.
func SignRotationConsent(oldKey *Key, handle, prevID, newPubKey string) (string, error) {
	h, err := NormalizeHandle(handle)
	if err != nil {
		return "", err
	}
	if !nostr.IsValid32ByteHex(prevID) || !nostr.IsValidPublicKey(newPubKey) {
		return "", fmt.Errorf("%w: consent needs a 64-hex claim id and a valid new pubkey", ErrInvalidClaim)
	}
	return oldKey.SignDigest(RotationConsentDigest(h, prevID, newPubKey))
}

func ts(t time.Time) nostr.Timestamp {
	if t.IsZero() {
		return nostr.Now()
	}
	return nostr.Timestamp(t.Unix())
}

func claimTags(handle string, p ClaimParams) (nostr.Tags, error) {
	tags := nostr.Tags{{"n", handle}}
	if p.LNNode != "" {
		ln := strings.ToLower(p.LNNode)
		if err := checkLNNode(ln); err != nil {
			return nil, err
		}
		tags = append(tags, nostr.Tag{"ln", ln})
	}
	if len(p.Relays) > MaxClaimRelays {
		return nil, fmt.Errorf("%w: %d relays, at most %d", ErrInvalidClaim, len(p.Relays), MaxClaimRelays)
	}
	for _, r := range p.Relays {
		if err := CheckRelayURL(r); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidClaim, err)
		}
		tags = append(tags, nostr.Tag{"relay", r})
	}
	return tags, nil
}

// NewClaim builds and signs a first claim of p.Handle by key.
func NewClaim(key *Key, p ClaimParams) (*nostr.Event, error) {
	h, err := NormalizeHandle(p.Handle)
	if err != nil {
		return nil, err
	}
	tags, err := claimTags(h, p)
	if err != nil {
		return nil, err
	}
	tags = append(tags, nostr.Tag{"alt", "anchorchat handle claim: @" + h})
	evt := &nostr.Event{Kind: KindHandleClaim, CreatedAt: ts(p.CreatedAt), Tags: tags}
	if err := key.Sign(evt); err != nil {
		return nil, err
	}
	return evt, nil
}

// NewRotation builds a rotation of prev signed by newKey, carrying consent
// (from SignRotationConsent by prev's key). p.Handle may be empty; if set it
// must equal prev.Handle. p's LNNode and Relays are the new claim's data.
func NewRotation(newKey *Key, prev *Claim, consent string, p ClaimParams) (*nostr.Event, error) {
	if prev == nil || prev.Type == ClaimRevocation {
		return nil, fmt.Errorf("%w: a rotation replaces a claim", ErrInvalidClaim)
	}
	if p.Handle != "" {
		h, err := NormalizeHandle(p.Handle)
		if err != nil {
			return nil, err
		}
		if h != prev.Handle {
			return nil, fmt.Errorf("%w: rotation of %q cannot name handle %q", ErrInvalidClaim, prev.Handle, h)
		}
	}
	tags, err := claimTags(prev.Handle, p)
	if err != nil {
		return nil, err
	}
	tags = append(tags,
		nostr.Tag{"prev", prev.ID, prev.PubKey},
		nostr.Tag{"consent", consent},
		nostr.Tag{"alt", "anchorchat handle rotation: @" + prev.Handle})
	evt := &nostr.Event{Kind: KindHandleClaim, CreatedAt: ts(p.CreatedAt), Tags: tags}
	if err := newKey.Sign(evt); err != nil {
		return nil, err
	}
	return evt, nil
}

// Rotate is NewRotation for a caller holding both keys: oldKey (which must
// have signed prev) consents, newKey signs.
func Rotate(oldKey, newKey *Key, prev *Claim, p ClaimParams) (*nostr.Event, error) {
	if prev == nil {
		return nil, fmt.Errorf("%w: nothing to rotate", ErrInvalidClaim)
	}
	if oldKey.PublicKey() != prev.PubKey {
		return nil, fmt.Errorf("%w: claim %s is held by %s, not by the consenting key", ErrNotCurrentKey, prev.ID, prev.PubKey)
	}
	consent, err := SignRotationConsent(oldKey, prev.Handle, prev.ID, newKey.PublicKey())
	if err != nil {
		return nil, err
	}
	return NewRotation(newKey, prev, consent, p)
}

// NewRevocation builds a revocation of target, signed by key (which must be
// the current key of the chain for validators to accept it).
func NewRevocation(key *Key, target *Claim, reason string, createdAt time.Time) (*nostr.Event, error) {
	if target == nil || target.Type == ClaimRevocation {
		return nil, fmt.Errorf("%w: a revocation targets a claim", ErrInvalidClaim)
	}
	if len(reason) > MaxRevokeReason {
		return nil, fmt.Errorf("%w: reason longer than %d bytes", ErrInvalidClaim, MaxRevokeReason)
	}
	evt := &nostr.Event{
		Kind:      KindHandleRevocation,
		CreatedAt: ts(createdAt),
		Content:   reason,
		Tags: nostr.Tags{
			{"n", target.Handle},
			{"e", target.ID},
			{"alt", "anchorchat handle revocation: @" + target.Handle},
		},
	}
	if err := key.Sign(evt); err != nil {
		return nil, err
	}
	return evt, nil
}

func checkLNNode(ln string) error {
	b, err := hex.DecodeString(ln)
	if err != nil || len(b) != 33 || ln != strings.ToLower(ln) {
		return fmt.Errorf("%w: ln node pubkey must be 66 lowercase hex characters (33-byte compressed key)", ErrInvalidClaim)
	}
	if b[0] != 0x02 && b[0] != 0x03 {
		return fmt.Errorf("%w: ln node pubkey must be compressed (02/03 prefix)", ErrInvalidClaim)
	}
	if _, err := btcec.ParsePubKey(b); err != nil {
		return fmt.Errorf("%w: ln node pubkey is not on the curve: %w", ErrInvalidClaim, err)
	}
	return nil
}

// CheckRelayURL accepts ws:// and wss:// URLs with a host, no user info,
// at most MaxRelayURLLen bytes.
func CheckRelayURL(u string) error {
	if len(u) > MaxRelayURLLen {
		return fmt.Errorf("relay URL longer than %d bytes", MaxRelayURLLen)
	}
	p, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("relay URL %q: %w", u, err)
	}
	if p.Scheme != "wss" && p.Scheme != "ws" {
		return fmt.Errorf("relay URL %q: scheme must be wss or ws", u)
	}
	if p.Hostname() == "" || p.User != nil { // "wss://:443" has a Host and no host name
		return fmt.Errorf("relay URL %q: needs a host and no user info", u)
	}
	return nil
}

// singleTag returns the values of the only tag named name, nil if absent,
// or an error if it appears more than once.
// isLowerHex reports whether s is n lowercase hex characters.
func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func singleTag(evt *nostr.Event, name string) (nostr.Tag, error) {
	var found nostr.Tag
	for _, t := range evt.Tags {
		if len(t) > 0 && t[0] == name {
			if found != nil {
				return nil, fmt.Errorf("%w: more than one %q tag", ErrInvalidClaim, name)
			}
			found = t
		}
	}
	return found, nil
}

// ValidateClaim checks one claim, rotation or revocation event on its own:
// kind, id and signature, tags, handle syntax, and for a rotation the old
// key's consent signature. It does not know the chain: whether the signer
// of a rotation or revocation actually holds the handle is ValidateChain's
// job.
func ValidateClaim(evt *nostr.Event) (*Claim, error) {
	if evt == nil {
		return nil, fmt.Errorf("%w: nil event", ErrInvalidClaim)
	}
	if evt.Kind != KindHandleClaim && evt.Kind != KindHandleRevocation {
		return nil, fmt.Errorf("%w: kind %d is not %d (claim) or %d (revocation)", ErrInvalidClaim, evt.Kind, KindHandleClaim, KindHandleRevocation)
	}
	if !nostr.IsValidPublicKey(evt.PubKey) {
		return nil, fmt.Errorf("%w: pubkey %q is not a valid key", ErrInvalidClaim, evt.PubKey)
	}
	if !evt.CheckID() {
		return nil, fmt.Errorf("%w: event id does not match its content (altered event)", ErrClaimSignature)
	}
	if !eventsig.Valid(evt) {
		return nil, fmt.Errorf("%w: event %s is not signed by its pubkey %s (signed by another key or altered)", ErrClaimSignature, evt.ID, evt.PubKey)
	}
	c := &Claim{ID: evt.ID, PubKey: evt.PubKey, CreatedAt: evt.CreatedAt, Event: evt}

	nt, err := singleTag(evt, "n")
	if err != nil {
		return nil, err
	}
	if len(nt) < 2 {
		return nil, fmt.Errorf("%w: no [\"n\", handle] tag", ErrInvalidClaim)
	}
	if err := ValidateHandle(nt[1]); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidClaim, err)
	}
	c.Handle = nt[1]
	if _, err := singleTag(evt, "alt"); err != nil { // 0 or 1 (docs/protocol.md)
		return nil, err
	}

	if evt.Kind == KindHandleRevocation {
		c.Type = ClaimRevocation
		et, err := singleTag(evt, "e")
		if err != nil {
			return nil, err
		}
		if len(et) < 2 || !nostr.IsValid32ByteHex(et[1]) {
			return nil, fmt.Errorf("%w: revocation needs one [\"e\", claim-id] tag with a 64-hex id", ErrInvalidClaim)
		}
		if len(evt.Content) > MaxRevokeReason {
			return nil, fmt.Errorf("%w: revocation reason longer than %d bytes", ErrInvalidClaim, MaxRevokeReason)
		}
		c.Revokes, c.Reason = et[1], evt.Content
		return c, nil
	}

	c.Type = ClaimFirst
	lt, err := singleTag(evt, "ln")
	if err != nil {
		return nil, err
	}
	if lt != nil {
		if len(lt) < 2 {
			return nil, fmt.Errorf("%w: empty ln tag", ErrInvalidClaim)
		}
		if err := checkLNNode(lt[1]); err != nil {
			return nil, err
		}
		c.LNNode = lt[1]
	}
	for _, t := range evt.Tags {
		if len(t) >= 1 && t[0] == "relay" {
			if len(t) < 2 {
				return nil, fmt.Errorf("%w: empty relay tag", ErrInvalidClaim)
			}
			if err := CheckRelayURL(t[1]); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrInvalidClaim, err)
			}
			c.Relays = append(c.Relays, t[1])
		}
	}
	if len(c.Relays) > MaxClaimRelays {
		return nil, fmt.Errorf("%w: %d relays, at most %d", ErrInvalidClaim, len(c.Relays), MaxClaimRelays)
	}

	pt, err := singleTag(evt, "prev")
	if err != nil {
		return nil, err
	}
	ct, err := singleTag(evt, "consent")
	if err != nil {
		return nil, err
	}
	if pt == nil {
		if ct != nil {
			return nil, fmt.Errorf("%w: consent tag without prev tag", ErrInvalidClaim)
		}
		return c, nil
	}
	c.Type = ClaimRotation
	if len(pt) < 3 || !nostr.IsValid32ByteHex(pt[1]) || !nostr.IsValidPublicKey(pt[2]) {
		return nil, fmt.Errorf("%w: rotation needs [\"prev\", <64-hex claim id>, <64-hex old pubkey>]", ErrInvalidClaim)
	}
	c.PrevID, c.PrevPubKey = pt[1], pt[2]
	if ct == nil || len(ct) < 2 || ct[1] == "" {
		return nil, fmt.Errorf("%w: rotation %s of claim %s has no consent tag signed by old key %s", ErrMissingConsent, c.ID, c.PrevID, c.PrevPubKey)
	}
	c.Consent = ct[1]
	if !isLowerHex(c.Consent, 128) {
		return nil, fmt.Errorf("%w: rotation %s: consent is not 128 lowercase hex characters", ErrBadConsent, c.ID)
	}
	if err := VerifyDigest(c.PrevPubKey, RotationConsentDigest(c.Handle, c.PrevID, c.PubKey), c.Consent); err != nil {
		return nil, fmt.Errorf("%w: rotation %s: old key %s did not sign consent to handing %q to %s: %w",
			ErrBadConsent, c.ID, c.PrevPubKey, c.Handle, c.PubKey, err)
	}
	return c, nil
}

// ChainState is the outcome of a valid chain of claims for one handle.
type ChainState struct {
	Handle  string
	Genesis *Claim   // first claim; its id identifies the chain
	Current *Claim   // latest claim (Genesis if never rotated)
	Claims  []*Claim // Genesis, then each rotation in order
	// Revoked is true when the current claim was revoked; Revocation is
	// then the (first, by id order) revocation event.
	Revoked    bool
	Revocation *Claim
}

// PubKey is the key holding the handle ("" if revoked).
func (s *ChainState) PubKey() string {
	if s.Revoked {
		return ""
	}
	return s.Current.PubKey
}

// ValidateChain checks that events (any order; duplicates by id are
// ignored) form one chain for one handle:
//
//   - every event passes ValidateClaim and names the same handle;
//   - exactly one first claim (no "prev"): a second one, by any key, is
//     refused — competing claims are decided by anchoring, not here, so
//     callers pass the events of one chain;
//   - each rotation names the current claim as prev, and the key it says
//     consented (prev's third element, whose signature ValidateClaim
//     checked) is the key that signed that claim; no forks;
//   - a revocation targets the current (latest) claim and is signed by
//     its key; after it nothing may follow.
func ValidateChain(events []*nostr.Event) (*ChainState, error) {
	seen := map[string]bool{}
	var claims, revs []*Claim
	for i, evt := range events {
		if evt != nil && seen[evt.ID] {
			continue
		}
		c, err := ValidateClaim(evt)
		if err != nil {
			return nil, fmt.Errorf("chain event %d: %w", i, err)
		}
		seen[c.ID] = true
		if c.Type == ClaimRevocation {
			revs = append(revs, c)
		} else {
			claims = append(claims, c)
		}
	}
	if len(claims) == 0 {
		return nil, fmt.Errorf("%w: no claim in the chain", ErrBrokenChain)
	}
	for _, c := range slices.Concat(claims[1:], revs) {
		if c.Handle != claims[0].Handle {
			return nil, fmt.Errorf("%w: event %s is for handle %q, event %s for %q: one chain is one handle", ErrBrokenChain, c.ID, c.Handle, claims[0].ID, claims[0].Handle)
		}
	}
	byID := map[string]*Claim{}
	children := map[string][]*Claim{}
	var genesis *Claim
	for _, c := range claims {
		byID[c.ID] = c
		if c.Type == ClaimFirst {
			if genesis != nil {
				a, b := genesis, c
				if b.ID < a.ID {
					a, b = b, a
				}
				return nil, fmt.Errorf("%w: two first claims of %q: %s by %s and %s by %s (a chain has one first claim; a claim by another key needs the holder's consent via a rotation)",
					ErrBrokenChain, c.Handle, a.ID, a.PubKey, b.ID, b.PubKey)
			}
			genesis = c
		} else {
			children[c.PrevID] = append(children[c.PrevID], c)
		}
	}
	if genesis == nil {
		return nil, fmt.Errorf("%w: no first claim (only rotations)", ErrBrokenChain)
	}
	st := &ChainState{Handle: genesis.Handle, Genesis: genesis, Current: genesis, Claims: []*Claim{genesis}}
	for _, c := range claims {
		if c.Type == ClaimRotation && byID[c.PrevID] == nil {
			return nil, fmt.Errorf("%w: rotation %s names previous claim %s, which is not in the chain", ErrBrokenChain, c.ID, c.PrevID)
		}
	}
	for cur := genesis; ; {
		next := children[cur.ID]
		if len(next) == 0 {
			break
		}
		if len(next) > 1 {
			return nil, fmt.Errorf("%w: claim %s is rotated twice (%s and %s): a fork", ErrBrokenChain, cur.ID, next[0].ID, next[1].ID)
		}
		r := next[0]
		if r.PrevPubKey != cur.PubKey {
			return nil, fmt.Errorf("%w: rotation %s carries consent from %s, but claim %s it replaces is held by %s",
				ErrNotCurrentKey, r.ID, r.PrevPubKey, cur.ID, cur.PubKey)
		}
		st.Claims = append(st.Claims, r)
		st.Current = r
		cur = r
	}
	if len(st.Claims) != len(claims) { // unreachable rotations would be a cycle
		return nil, fmt.Errorf("%w: %d claims are not linked to the first claim", ErrBrokenChain, len(claims)-len(st.Claims))
	}
	for _, rv := range revs {
		target := byID[rv.Revokes]
		if target == nil {
			return nil, fmt.Errorf("%w: revocation %s targets %s, which is not in the chain", ErrBrokenChain, rv.ID, rv.Revokes)
		}
		if rv.PubKey != st.Current.PubKey {
			return nil, fmt.Errorf("%w: revocation %s is signed by %s, but the handle is held by %s (only the current key can revoke)",
				ErrNotCurrentKey, rv.ID, rv.PubKey, st.Current.PubKey)
		}
		if target != st.Current {
			return nil, fmt.Errorf("%w: revocation %s targets claim %s, which was already rotated (current claim is %s)",
				ErrBrokenChain, rv.ID, target.ID, st.Current.ID)
		}
		if st.Revocation == nil || rv.ID < st.Revocation.ID {
			st.Revocation = rv
		}
		st.Revoked = true
	}
	return st, nil
}
