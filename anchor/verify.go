package anchor

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/nbd-wtf/go-nostr"
)

// Status is the outcome of verifying a handle or key.
type Status string

// Verdicts.
const (
	// Verified: the handle's earliest anchored claim has the required
	// confirmations; PubKey is the key holding it now.
	Verified Status = "VERIFIED"
	// Pending: anchored, but with fewer confirmations than required.
	Pending Status = "PENDING"
	// Unanchored: claims exist, none has a valid anchoring proof.
	Unanchored Status = "UNANCHORED"
	// Conflict: the asked key does not hold the handle; Holder does.
	Conflict Status = "CONFLICT"
	// Revoked: the handle's current key revoked it.
	Revoked Status = "REVOKED"
	// Invalid: the evidence for the asked claim fails; Reason says where.
	Invalid Status = "INVALID"
	// Incomplete: the evidence may lack events that would change the
	// verdict (a relay holds more events of one second than it returns at
	// once: ErrIncomplete), so no verdict is given; Reason says why.
	Incomplete Status = "INCOMPLETE"
)

// DefaultMinConfirmations is what Verify requires when Options leaves it 0.
const DefaultMinConfirmations = 6

// Query names what to verify: a handle, a key, or both (is this key the
// holder of this handle?).
type Query struct {
	Handle string `json:"handle,omitempty"`
	PubKey string `json:"pubkey,omitempty"`
}

// Options of Verify.
type Options struct {
	MinConfirmations int32 // 0 means DefaultMinConfirmations
	// MaxProofs bounds the attestations from relays checked in one
	// verification (0 means DefaultMaxProofs). Anyone can publish
	// attestations whose proofs pass every offline check and name a
	// made-up block, each costing a chain source call; the rest are
	// skipped, in the order given, and if one skipped could place a claim
	// of the handle earlier than its checked anchoring (or it has none),
	// a verdict that would name a holder is INCOMPLETE instead. Local
	// attestations (Attestation.Local:
	// the node's own and its kept evidence) are always checked and not
	// counted.
	MaxProofs int
	// Incomplete, when set, says the events given may not be all there
	// are (Fetch's ErrIncomplete): anything missing could be an earlier
	// anchored claim, a rotation or a revocation, so Verify names no
	// holder and answers INCOMPLETE with this error as the reason.
	Incomplete error
}

// DefaultMaxProofs is Options.MaxProofs's default: far more attestations
// than a handle's real history has, few enough btcd calls to stay quick.
const DefaultMaxProofs = 1000

// Holder is who holds a handle.
type Holder struct {
	PubKey  string `json:"pubkey"`
	ClaimID string `json:"claim_id"` // the current claim (first claim or latest rotation)
	Height  int32  `json:"height"`   // anchoring height of the handle's first claim
}

// Verdict is the result of Verify, JSON-ready for `anchorchat verify --json`.
type Verdict struct {
	Status Status `json:"status"`
	Handle string `json:"handle,omitempty"`
	// PubKey is the key the verdict is about: the holder for VERIFIED and
	// PENDING, the asked key otherwise.
	PubKey string `json:"pubkey,omitempty"`
	// ClaimID is the current claim of the holder (VERIFIED, PENDING,
	// REVOKED), or the asked claim.
	ClaimID               string    `json:"claim_id,omitempty"`
	Anchor                *Anchored `json:"anchor,omitempty"` // the first claim's anchoring
	Height                int32     `json:"height,omitempty"`
	Confirmations         int32     `json:"confirmations,omitempty"`
	RequiredConfirmations int32     `json:"required_confirmations"`
	Holder                *Holder   `json:"holder,omitempty"` // CONFLICT: who holds the handle
	Reason                string    `json:"reason,omitempty"`

	evidence []*nostr.Event
}

// Evidence is what a later verification of the handle needs to reach the
// same holder even if relays no longer return it (anyone can flood a
// relay with events tagged with a handle): the claims of the holder's
// chain from its first claim, in order, each followed by the attestation
// event of its earliest anchoring. Nothing else is needed: a claim left
// out (a later competing first claim, a losing fork) changes nothing when
// it is missing, and what would beat the chain must be anchored earlier.
// It is empty when no holder was established (INVALID, UNANCHORED).
func (v Verdict) Evidence() []*nostr.Event { return v.evidence }

func (v Verdict) String() string {
	switch v.Status {
	case Verified, Pending:
		return fmt.Sprintf("%s @%s key %s height %d confirmations %d/%d", v.Status, v.Handle, v.PubKey, v.Height, v.Confirmations, v.RequiredConfirmations)
	case Conflict:
		return fmt.Sprintf("%s @%s held by %s: %s", v.Status, v.Handle, v.Holder.PubKey, v.Reason)
	}
	return fmt.Sprintf("%s @%s: %s", v.Status, v.Handle, v.Reason)
}

// Verify decides q from claim events (kinds 3780/3781, any source, junk
// allowed) and attestations, checking every attestation against chain:
//
//  1. events and the claims embedded in attestations are validated one by
//     one (identity.ValidateClaim); invalid ones are set aside;
//  2. every attestation of a claim of the handle is verified end to end
//     (VerifyProof); a claim's anchoring is its earliest verified one;
//  3. the holder's chain starts at the earliest anchored first claim of the
//     handle (block height, then position in block, then leaf index); other
//     first claims lose, whenever they were signed;
//  4. from there, rotations whose prev names the current claim and whose
//     consent comes from its key move the handle; a revocation by the
//     current key naming the current claim ends it. Every rotation and
//     revocation of one claim is a successor; several successors with a
//     rotation among them are a fork, decided by the earliest anchoring
//     (anchored before unanchored; none anchored: INVALID), so a rotation
//     signed with a key after it revoked the claim does not undo the
//     revocation unless anchored before every anchored revocation of it.
//     Revocations alone are no fork: the earliest anchored (else lowest
//     id) ends the chain. identity.ValidateChain re-checks the result;
//  5. the verdict: REVOKED; else CONFLICT if q.PubKey is not the current
//     key; else PENDING while the first claim, or a rotation on the chain,
//     is below opts.MinConfirmations (a rotation not anchored at all
//     included); else VERIFIED.
//
// No anchored first claim: INVALID with the failing step if an attestation
// of the asked claim failed, UNANCHORED otherwise. An anchored first claim
// but an attestation left unchecked (opts.MaxProofs) that could place a
// claim of the handle earlier than its checked anchoring: INCOMPLETE. With opts.Incomplete
// set, nothing is decided: INCOMPLETE. The error is for chain source
// failures only (then no verdict can be given).
func Verify(ctx context.Context, chain ChainSource, q Query, events []*nostr.Event, atts []*Attestation, opts Options) (Verdict, error) {
	minConf := opts.MinConfirmations
	if minConf <= 0 {
		minConf = DefaultMinConfirmations
	}
	v := Verdict{Handle: q.Handle, PubKey: q.PubKey, RequiredConfirmations: minConf}
	if opts.Incomplete != nil {
		v.Status = Incomplete
		v.Reason = fmt.Sprintf("the evidence may be incomplete, so no holder is named: %v", opts.Incomplete)
		return v, nil
	}
	if _, ok := chain.(*MemoChain); !ok {
		chain = NewMemoChain(chain)
	}

	// 1. Valid claims, by id.
	valid := map[string]*identity.Claim{}
	rejected := map[string]error{} // subject's events that fail on their own
	consider := func(evt *nostr.Event) {
		if evt == nil || valid[evt.ID] != nil {
			return
		}
		c, err := identity.ValidateClaim(evt)
		if err != nil {
			if q.PubKey != "" && evt.PubKey == q.PubKey {
				rejected[evt.ID] = err
			}
			return
		}
		valid[c.ID] = c
	}
	for _, e := range events {
		consider(e)
	}
	for _, a := range atts {
		if a != nil {
			consider(a.Claim)
		}
	}
	if v.Handle == "" {
		v.Handle = handleOf(q.PubKey, valid)
		if v.Handle == "" {
			v.Status, v.Reason = Unanchored, "no valid claim by this key"
			if len(rejected) > 0 {
				v.Status, v.Reason = Invalid, firstErr(rejected).Error()
			}
			return v, nil
		}
	}
	for id, c := range valid {
		if c.Handle != v.Handle {
			delete(valid, id)
		}
	}

	// 2. Anchorings.
	anchored := map[string]*Anchored{}
	anchoredBy := map[string]*nostr.Event{} // the attestation event of each anchoring
	failed := map[string]error{}
	seenAtt := map[string]bool{}
	maxProofs, proofs := opts.MaxProofs, 0
	var skipped []*Attestation // of claims of the handle, left unchecked
	if maxProofs <= 0 {
		maxProofs = DefaultMaxProofs
	}
	for _, a := range atts {
		if a == nil || a.Claim == nil || a.Proof == nil {
			continue
		}
		if a.Event != nil {
			if seenAtt[a.Event.ID] {
				continue // the same attestation from two sources
			}
			seenAtt[a.Event.ID] = true
		}
		if valid[a.Claim.ID] == nil && !(q.PubKey != "" && a.Claim.PubKey == q.PubKey) &&
			!(q.PubKey == "" && handleTag(a.Claim) == v.Handle) {
			continue // not about this query
		}
		if !a.Local {
			if proofs++; proofs > maxProofs {
				if failed[a.Claim.ID] == nil && anchored[a.Claim.ID] == nil {
					failed[a.Claim.ID] = fmt.Errorf("attestation of claim %s not checked: more than %d attestations from relays in one verification", a.Claim.ID, maxProofs)
				}
				if valid[a.Claim.ID] != nil {
					skipped = append(skipped, a)
				}
				continue
			}
		}
		an, err := VerifyProof(ctx, chain, a.Claim, a.Proof)
		if err != nil {
			var pe *ProofError
			if errors.As(err, &pe) && pe.Step == StepChain {
				return v, fmt.Errorf("anchor: verify: %w", err)
			}
			if failed[a.Claim.ID] == nil {
				failed[a.Claim.ID] = fmt.Errorf("attestation of claim %s: %w", a.Claim.ID, err)
			}
			continue
		}
		if cur := anchored[an.ClaimID]; cur == nil || an.Before(cur) || (anchoredBy[an.ClaimID] == nil && !cur.Before(an)) {
			anchored[an.ClaimID], anchoredBy[an.ClaimID] = an, a.Event
		}
	}

	// 3. Earliest anchored first claim.
	var win *Anchored
	for id, an := range anchored {
		if c := valid[id]; c != nil && c.Type == identity.ClaimFirst && (win == nil || an.Before(win)) {
			win = an
		}
	}
	if win == nil {
		for id, c := range valid {
			if q.PubKey == "" || c.PubKey == q.PubKey {
				if err := failed[id]; err != nil {
					v.Status, v.ClaimID, v.Reason = Invalid, id, err.Error()
					return v, nil
				}
			}
		}
		if err := firstErr(failed); err != nil && len(valid) == 0 {
			v.Status, v.Reason = Invalid, err.Error()
			return v, nil
		}
		if len(rejected) > 0 {
			v.Status, v.Reason = Invalid, firstErr(rejected).Error()
			return v, nil
		}
		v.Status = Unanchored
		switch {
		case len(valid) == 0:
			v.Reason = "no valid claim of this handle found"
		default:
			v.Reason = fmt.Sprintf("%d valid claim(s) of this handle, none with a valid anchoring proof", len(valid))
		}
		return v, nil
	}

	// An attestation left unchecked may anchor a claim of the handle
	// earlier than the checked ones do (an earlier first claim, a
	// successor ordering a fork): like an incomplete fetch, name nobody.
	// One placing its claim no earlier than the claim's checked anchoring
	// cannot change it (a claim's anchoring is its earliest).
	for _, a := range skipped {
		p := a.Proof
		at := &Anchored{Height: int32(p.Height), TxIndex: p.TxIndex, LeafIndex: p.LeafIndex, ClaimID: a.Claim.ID}
		if cur := anchored[a.Claim.ID]; cur == nil || p.Height > 1<<31-1 || at.Before(cur) {
			v.Status = Incomplete
			v.Reason = fmt.Sprintf("not every attestation was checked, so no holder is named: attestation of claim %s not checked: more than %d attestations from relays in one verification", a.Claim.ID, maxProofs)
			return v, nil
		}
	}

	// 4. The chain from the winning first claim. A claim's holder may rotate
	// it or revoke it; two such successors (two rotations, or a rotation and
	// a revocation) are a fork, decided by anchoring like competing claims.
	genesis := valid[win.ClaimID]
	chainEvts := []*nostr.Event{genesis.Event}
	cur := genesis
	var notes []string
	for {
		// Every successor the current key signed: rotations naming the
		// current claim with its key's consent, and revocations of it.
		var kids []*identity.Claim
		rotations := 0
		for _, c := range valid {
			switch {
			case c.Type == identity.ClaimRotation && c.PrevID == cur.ID:
				if c.PrevPubKey != cur.PubKey {
					notes = append(notes, fmt.Sprintf("rotation %s refused: consent by %s, claim %s is held by %s", c.ID, c.PrevPubKey, cur.ID, cur.PubKey))
					continue
				}
				kids = append(kids, c)
				rotations++
			case c.Type == identity.ClaimRevocation && c.Revokes == cur.ID && c.PubKey == cur.PubKey:
				kids = append(kids, c)
			}
		}
		if len(kids) == 0 {
			break
		}
		// Earliest anchored first; then the unanchored ones, by id. Every
		// revocation takes part, so an unanchored one cannot stand in for
		// an anchored one when a rotation competes (the earliest anchored
		// revocation is the one that counts).
		sort.Slice(kids, func(i, j int) bool {
			ai, aj := anchored[kids[i].ID], anchored[kids[j].ID]
			switch {
			case ai != nil && aj != nil:
				return ai.Before(aj)
			case ai != nil || aj != nil:
				return ai != nil
			}
			return kids[i].ID < kids[j].ID
		})
		// Revocations alone agree (the handle ends either way): no fork.
		// With a rotation among the successors, the earliest anchored one
		// is taken, and a fork none of whose branches is anchored is
		// INVALID.
		if rotations > 0 && len(kids) > 1 {
			if anchored[kids[0].ID] == nil {
				v.Status, v.ClaimID = Invalid, cur.ID
				what := "rotated by"
				if rotations < len(kids) {
					what = "rotated and revoked by"
				}
				v.Reason = fmt.Sprintf("fork: claim %s is %s %s and %s and none of its successors is anchored", cur.ID, what, kids[0].ID, kids[1].ID)
				return v, nil
			}
			for _, k := range kids[1:] {
				notes = append(notes, fmt.Sprintf("%s %s of claim %s ignored: %s was anchored first", k.Type, k.ID, cur.ID, kids[0].ID))
			}
		}
		if kids[0].Type == identity.ClaimRevocation {
			chainEvts = append(chainEvts, kids[0].Event)
			break
		}
		cur = kids[0]
		chainEvts = append(chainEvts, cur.Event)
	}
	st, err := identity.ValidateChain(chainEvts)
	if err != nil {
		v.Status, v.ClaimID, v.Reason = Invalid, cur.ID, err.Error()
		return v, nil
	}
	v.Anchor, v.Height, v.Confirmations = win, win.Height, win.Confirmations
	for _, e := range chainEvts {
		v.evidence = append(v.evidence, e)
		if a := anchoredBy[e.ID]; a != nil {
			v.evidence = append(v.evidence, a)
		}
	}
	holder := &Holder{PubKey: st.Current.PubKey, ClaimID: st.Current.ID, Height: win.Height}

	// 5. The verdict.
	if st.Revoked {
		v.Status, v.ClaimID = Revoked, st.Current.ID
		v.Reason = fmt.Sprintf("revoked by %s in event %s", st.Current.PubKey, st.Revocation.ID)
		if st.Revocation.Reason != "" {
			v.Reason += ": " + st.Revocation.Reason
		}
		return v, nil
	}
	if q.PubKey != "" && q.PubKey != st.Current.PubKey {
		v.Status, v.Holder = Conflict, holder
		v.Reason = conflictReason(q.PubKey, st, valid, anchored, rejected, failed, notes)
		return v, nil
	}
	v.PubKey, v.ClaimID = st.Current.PubKey, st.Current.ID
	if win.Confirmations < minConf {
		v.Status = Pending
		v.Reason = fmt.Sprintf("%d of %d confirmations", win.Confirmations, minConf)
		return v, nil
	}
	// A rotation takes effect by signature, but until it is anchored the
	// key it replaces can still sign a competing successor and anchor that
	// first (step 4), so the handle is not settled on the new key yet.
	for _, c := range st.Claims[1:] {
		an := anchored[c.ID]
		switch {
		case an == nil:
			v.Status = Pending
			v.Reason = fmt.Sprintf("rotation %s to this key is not anchored yet: until it is, the key it replaces can still move the handle", c.ID)
			return v, nil
		case an.Confirmations < minConf:
			v.Status = Pending
			v.Reason = fmt.Sprintf("rotation %s to this key: %d of %d confirmations", c.ID, an.Confirmations, minConf)
			return v, nil
		}
	}
	v.Status = Verified
	return v, nil
}

func conflictReason(pk string, st *identity.ChainState, valid map[string]*identity.Claim, anchored map[string]*Anchored,
	rejected, failed map[string]error, notes []string) string {
	for _, c := range st.Claims {
		if c.PubKey == pk {
			return fmt.Sprintf("key held the handle in claim %s, rotated to %s since", c.ID, st.Current.PubKey)
		}
	}
	reason := fmt.Sprintf("the handle is held by %s since its first claim %s anchored at height %d", st.Current.PubKey, st.Genesis.ID, anchoredHeight(anchored, st.Genesis.ID))
	var ids []string
	for id, c := range valid {
		if c.PubKey == pk {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		if an := anchored[id]; an != nil {
			return reason + fmt.Sprintf("; this key's claim %s was anchored later, at height %d", id, an.Height)
		}
		if err := failed[id]; err != nil {
			return reason + "; this key's " + err.Error()
		}
	}
	if err := firstErr(rejected); err != nil {
		return reason + "; this key's event refused: " + err.Error()
	}
	if len(notes) > 0 {
		return reason + "; " + notes[0]
	}
	if len(ids) > 0 {
		return reason + fmt.Sprintf("; this key's claim %s is not anchored", ids[0])
	}
	return reason + "; no claim by this key"
}

func anchoredHeight(m map[string]*Anchored, id string) int32 {
	if a := m[id]; a != nil {
		return a.Height
	}
	return 0
}

func firstErr(m map[string]error) error {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil
	}
	sort.Strings(keys)
	return m[keys[0]]
}

// handleOf picks the handle a key asks about when the query names none: the
// handle of the key's claims (the lowest handle if it claimed several).
func handleOf(pk string, valid map[string]*identity.Claim) string {
	h := ""
	for _, c := range valid {
		if c.PubKey == pk && (h == "" || c.Handle < h) {
			h = c.Handle
		}
	}
	return h
}

func handleTag(evt *nostr.Event) string {
	if t := evt.Tags.Find("n"); t != nil {
		return t[1]
	}
	return ""
}
