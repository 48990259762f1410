package anchor

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/internal/eventsig"
	"github.com/nbd-wtf/go-nostr"
)

// KindAttestation is the Nostr kind of an anchor attestation: a regular
// kind (relays keep every one), next to the claim kinds 3780/3781.
const KindAttestation = 3782

// Attestation is a claim event with the proof of its anchoring.
type Attestation struct {
	Claim *nostr.Event
	Proof *Proof
	Event *nostr.Event // the attestation event it came from, if any
	// Local marks an attestation from the verifying node's own store
	// (BatcherSource sets it): one its batcher built from a block it saw,
	// or evidence kept from an earlier verdict. Verify checks every local
	// attestation without counting it against Options.MaxProofs: that
	// bound is for what relays serve, where anyone can publish proofs
	// naming made-up blocks, and with anchor.accept-others anyone can also
	// fill the node's store, which must not crowd out its kept evidence.
	Local bool
}

// attestationContent is the JSON in an attestation event's content.
type attestationContent struct {
	V     int          `json:"v"`
	Claim *nostr.Event `json:"claim"`
	Proof string       `json:"proof"` // base64 (RFC 4648, padded) of the binary proof
}

// EventSigner signs Nostr events (identity.Key implements it).
type EventSigner interface {
	Sign(evt *nostr.Event) error
}

// ErrAttestation is wrapped by every attestation-event decoding error.
var ErrAttestation = errors.New("anchor: malformed attestation event")

// NewAttestationEvent builds and signs the attestation event for claim and
// proof. Content: {"v":1,"claim":<claim event>,"proof":"<base64>"}. Tags
// reference the claim (e), its handle (n), its key (p), its kind (k) and
// the block (["block", height, hash]) so relays can index them; verifiers
// use the content only.
func NewAttestationEvent(signer EventSigner, claim *nostr.Event, p *Proof, createdAt nostr.Timestamp) (*nostr.Event, error) {
	c, err := identity.ValidateClaim(claim)
	if err != nil {
		return nil, fmt.Errorf("anchor: attestation for an invalid claim: %w", err)
	}
	bin, err := p.MarshalBinary()
	if err != nil {
		return nil, err
	}
	content, err := json.Marshal(attestationContent{V: 1, Claim: claim, Proof: base64.StdEncoding.EncodeToString(bin)})
	if err != nil {
		return nil, fmt.Errorf("anchor: attestation content: %w", err)
	}
	if createdAt == 0 {
		createdAt = nostr.Now()
	}
	evt := &nostr.Event{
		Kind:      KindAttestation,
		CreatedAt: createdAt,
		Content:   string(content),
		Tags: nostr.Tags{
			{"e", c.ID},
			{"n", c.Handle},
			{"p", c.PubKey},
			{"k", strconv.Itoa(claim.Kind)},
			{"block", strconv.FormatUint(uint64(p.Height), 10), p.BlockHash.String()},
			{"alt", "anchorchat anchor attestation: @" + c.Handle},
		},
	}
	if err := signer.Sign(evt); err != nil {
		return nil, fmt.Errorf("anchor: sign attestation: %w", err)
	}
	return evt, nil
}

// ParseAttestation decodes an attestation event strictly: kind, the
// event's own id and signature (its author carries no authority, but a
// relay must not alter it), content JSON with no unknown fields, version
// 1, the binary proof, and an e tag naming the embedded claim. It does not
// verify the claim or the proof (VerifyProof does).
func ParseAttestation(evt *nostr.Event) (*Attestation, error) {
	if evt == nil || evt.Kind != KindAttestation {
		return nil, fmt.Errorf("%w: not a kind %d event", ErrAttestation, KindAttestation)
	}
	if !evt.CheckID() {
		return nil, fmt.Errorf("%w: event id does not match", ErrAttestation)
	}
	if !eventsig.Valid(evt) {
		return nil, fmt.Errorf("%w: bad event signature", ErrAttestation)
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(evt.Content)))
	dec.DisallowUnknownFields()
	var ac attestationContent
	if err := dec.Decode(&ac); err != nil {
		return nil, fmt.Errorf("%w: content: %w", ErrAttestation, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after content JSON", ErrAttestation)
	}
	if ac.V != 1 || ac.Claim == nil {
		return nil, fmt.Errorf("%w: content version %d (want 1) or no claim", ErrAttestation, ac.V)
	}
	bin, err := base64.StdEncoding.Strict().DecodeString(ac.Proof)
	if err != nil {
		return nil, fmt.Errorf("%w: proof base64: %w", ErrAttestation, err)
	}
	p := new(Proof)
	if err := p.UnmarshalBinary(bin); err != nil {
		return nil, err
	}
	if et := evt.Tags.Find("e"); et == nil || et[1] != ac.Claim.ID {
		return nil, fmt.Errorf("%w: e tag does not name the embedded claim %s", ErrAttestation, ac.Claim.ID)
	}
	return &Attestation{Claim: ac.Claim, Proof: p, Event: evt}, nil
}

// ParseAttestations parses the attestation events among evts, skipping
// (and returning the errors of) malformed ones.
func ParseAttestations(evts []*nostr.Event) ([]*Attestation, []error) {
	var out []*Attestation
	var errs []error
	for _, e := range evts {
		if e == nil || e.Kind != KindAttestation {
			continue
		}
		a, err := ParseAttestation(e)
		if err != nil {
			errs = append(errs, fmt.Errorf("attestation %s: %w", e.ID, err))
			continue
		}
		out = append(out, a)
	}
	return out, errs
}
