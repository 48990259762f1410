package chat

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/identity"
)

// ErrUnknownContact: an address that resolves to no key.
var ErrUnknownContact = errors.New("chat: unknown contact")

// dmListTTL is how long a fetched kind 10050 list is trusted before
// being looked up again.
const dmListTTL = time.Hour

// Resolve turns an address into a contact:
//   - 64 hex characters, npub1… or nprofile1… (its relays become hints);
//   - name@domain, resolved over NIP-05 (its relays become hints);
//   - @handle: the current key of the handle's chain of claims (kind 3780
//     with ["n", handle], followed through its rotations; a revoked handle
//     resolves to nobody), looked up on the own relay and the discovery
//     relays. When several keys make first claims of it, the earliest
//     claim's chain is taken and the verdict says so (Config.Verdict, the
//     anchoring layer, judges the key when set).
//
// What is learnt is remembered in the message store.
func (s *Service) Resolve(ctx context.Context, addr string) (*Contact, error) {
	addr = strings.TrimSpace(addr)
	c := &Contact{}
	switch {
	case strings.HasPrefix(addr, "nprofile1"):
		pp, err := identity.DecodeNprofile(addr)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnknownContact, err)
		}
		c.PubKey, c.Relays = pp.PublicKey, pp.Relays
	case strings.HasPrefix(addr, "@"):
		if err := s.resolveHandle(ctx, strings.TrimPrefix(addr, "@"), c); err != nil {
			return nil, err
		}
	case strings.Contains(addr, "@"):
		res, err := s.cfg.Resolver.Resolve(ctx, addr)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrUnknownContact, addr, err)
		}
		c.PubKey, c.Relays = res.PubKey, res.Relays
		c.NIP05 = res.Name + "@" + res.Domain
		if res.Name == "_" {
			c.NIP05 = res.Domain
		}
	default:
		pk, err := identity.ParsePublicKey(addr)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %w", ErrUnknownContact, addr, err)
		}
		c.PubKey = pk
	}
	c.Relays = dedupRelays(c.Relays)
	if c.Handle != "" || c.NIP05 != "" || len(c.Relays) > 0 || c.Verdict != "" {
		if err := s.st.saveContact(ctx, c, 0); err != nil {
			return nil, fmt.Errorf("chat: save contact: %w", err)
		}
	}
	if c.Handle == "" {
		s.learnHandle(ctx, c.PubKey, false)
	}
	return s.contactStatus(ctx, c.PubKey)
}

func (s *Service) resolveHandle(ctx context.Context, handle string, c *Contact) error {
	h, err := identity.NormalizeHandle(handle)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnknownContact, err)
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	relays := append([]string{s.cfg.RelayURL}, s.cfg.DiscoveryRelays...)
	var claims []*identity.Claim
	seen := map[string]bool{}
	for _, u := range dedupRelays(relays) {
		evts, err := s.query(lctx, u, nostr.Filter{Kinds: []int{identity.KindHandleClaim, identity.KindHandleRevocation}, Tags: nostr.TagMap{"n": {h}}, Limit: 100})
		if err != nil {
			s.log.Debug("handle lookup failed", "relay", u, "err", err)
			continue
		}
		for _, e := range evts {
			if seen[e.ID] {
				continue
			}
			seen[e.ID] = true
			cl, err := identity.ValidateClaim(e)
			if err != nil || cl.Handle != h {
				continue
			}
			claims = append(claims, cl)
		}
	}
	st, keys, err := handleChain(h, claims)
	if err != nil {
		return err
	}
	holder := st.PubKey() // "" once revoked
	// Whoever held the handle before (a rotation moved it, or it was
	// revoked) is no longer shown under it; not when several keys claim it
	// (a first claim can be backdated at will: that is for the verdict).
	if keys == 1 {
		if err := s.st.forgetHandle(ctx, h, holder); err != nil {
			return fmt.Errorf("chat: save contact: %w", err)
		}
	}
	if st.Revoked {
		return fmt.Errorf("%w: @%s was revoked by its holder", ErrUnknownContact, h)
	}
	// The chain's current claim carries the holder's relays and node; a
	// later first claim by the same key (outside the chain) updates them.
	cur := st.Current
	for _, cl := range claims {
		if cl.Type == identity.ClaimFirst && cl.PubKey == holder && cl.CreatedAt > cur.CreatedAt {
			cur = cl
		}
	}
	c.PubKey, c.Handle, c.Relays, c.LNNode = holder, h, cur.Relays, cur.LNNode
	if keys > 1 && s.cfg.Verdict == nil {
		c.Verdict = fmt.Sprintf("unanchored: %d keys claim @%s, earliest shown", keys, h)
	}
	return nil
}

// handleChain decides from the valid events of handle h (claims, rotations,
// revocations) who holds it: the chain starting at the earliest first claim
// (by created_at, then id; when several keys claim h, only the anchoring
// layer can really tell, see Config.Verdict), followed through each
// rotation that names its current claim with the consent of that claim's
// key, to its current claim, or to a revocation by the current key. It
// returns the chain and how many keys made first claims of h. A claim
// rotated twice (a fork) is not decided here: an error.
func handleChain(h string, claims []*identity.Claim) (*identity.ChainState, int, error) {
	var firsts []*identity.Claim
	next := map[string][]*identity.Claim{} // rotations and revocations by the claim they name
	keys := map[string]bool{}
	for _, cl := range claims {
		switch cl.Type {
		case identity.ClaimFirst:
			firsts = append(firsts, cl)
			keys[cl.PubKey] = true
		case identity.ClaimRotation:
			next[cl.PrevID] = append(next[cl.PrevID], cl)
		case identity.ClaimRevocation:
			next[cl.Revokes] = append(next[cl.Revokes], cl)
		}
	}
	if len(firsts) == 0 {
		return nil, 0, fmt.Errorf("%w: no claim of @%s found", ErrUnknownContact, h)
	}
	slices.SortFunc(firsts, func(a, b *identity.Claim) int {
		if a.CreatedAt != b.CreatedAt {
			return int(a.CreatedAt - b.CreatedAt)
		}
		return strings.Compare(a.ID, b.ID)
	})
	cur := firsts[0]
	chain := []*nostr.Event{cur.Event}
	for range claims { // each step takes a claim: no longer than that
		var rots, revs []*identity.Claim
		for _, n := range next[cur.ID] {
			switch {
			case n.Type == identity.ClaimRevocation && n.PubKey == cur.PubKey:
				revs = append(revs, n)
			case n.Type == identity.ClaimRotation && n.PrevPubKey == cur.PubKey:
				rots = append(rots, n)
			}
		}
		if len(revs) > 0 && len(rots) > 0 {
			// A rotation and a revocation of the same claim: a fork only
			// anchoring decides (protocol.md). Taking the revocation would
			// let a stolen old key end the handle its owner rotated away.
			return nil, 0, fmt.Errorf("%w: @%s: claim %s is both rotated (to %s) and revoked by its key; only the anchoring layer can tell which came first",
				ErrUnknownContact, h, cur.ID, rots[0].PubKey)
		}
		if len(revs) > 0 { // the holder ended the handle
			for _, r := range revs {
				chain = append(chain, r.Event)
			}
			break
		}
		if len(rots) == 0 {
			break
		}
		if len(rots) > 1 {
			return nil, 0, fmt.Errorf("%w: @%s: claim %s is rotated twice (to %s and %s); only the anchoring layer can tell which holds",
				ErrUnknownContact, h, cur.ID, rots[0].PubKey, rots[1].PubKey)
		}
		cur = rots[0]
		chain = append(chain, cur.Event)
	}
	st, err := identity.ValidateChain(chain)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: @%s: %w", ErrUnknownContact, h, err)
	}
	return st, len(keys), nil
}

// contactStatus returns what the store knows about pubkey, with the
// anchoring verdict refreshed from Config.Verdict when set.
func (s *Service) contactStatus(ctx context.Context, pubkey string) (*Contact, error) {
	c, _, err := s.st.contact(ctx, pubkey)
	if err != nil {
		return nil, fmt.Errorf("chat: contact: %w", err)
	}
	c.Npub, _ = identity.EncodeNpub(pubkey)
	if s.cfg.Verdict != nil && c.Handle != "" {
		if v := s.cfg.Verdict(ctx, pubkey, c.Handle); v != "" {
			c.Verdict = v
		}
	}
	return c, nil
}

// maxRelaysPerRecipient bounds the relays of theirs a message to one
// recipient goes to: the first of their kind 10050 list, or of their hints
// and known relays. The list is theirs to make as long as they like; its
// relays hanging could otherwise take every one of the outbox's
// maxRelaysInFlight slots for RelayTimeout, holding up the deliveries to
// every other relay.
const maxRelaysPerRecipient = maxRelaysInFlight / 2

// theirRelays is the first maxRelaysPerRecipient of relays.
func theirRelays(relays []string) []string {
	return relays[:min(len(relays), maxRelaysPerRecipient)]
}

// dmRelaysFor returns where to deliver to pubkey: their kind 10050 list
// (cached for dmListTTL, else looked up on the hints, their known relays,
// our relay and the discovery relays), falling back to the hints, their
// known relays and Config.FallbackRelays; of their list, hints and known
// relays, the first maxRelaysPerRecipient.
func (s *Service) dmRelaysFor(ctx context.Context, pubkey string, hints []string) ([]string, error) {
	c, fetched, err := s.st.contact(ctx, pubkey)
	if err != nil {
		return nil, fmt.Errorf("chat: contact: %w", err)
	}
	if len(c.DMRelays) > 0 && s.now().Sub(time.Unix(fetched, 0)) < dmListTTL {
		return theirRelays(c.DMRelays), nil
	}
	where := slices.Concat(hints, c.Relays, []string{s.cfg.RelayURL}, s.cfg.DiscoveryRelays)
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	evt := s.newest(lctx, where, nostr.Filter{Kinds: []int{KindDMRelayList}, Authors: []string{pubkey}, Limit: 1})
	cancel()
	if evt != nil {
		if list := dedupRelays(relayTags(evt)); len(list) > 0 {
			c.DMRelays = list
			if err := s.st.saveContact(ctx, c, s.now().Unix()); err != nil {
				return nil, fmt.Errorf("chat: save contact: %w", err)
			}
			return theirRelays(list), nil
		}
	}
	if len(c.DMRelays) > 0 {
		return theirRelays(c.DMRelays), nil // stale list beats none
	}
	fb := dedupRelays(slices.Concat(theirRelays(dedupRelays(slices.Concat(hints, c.Relays))), s.cfg.FallbackRelays))
	if len(fb) == 0 {
		return nil, fmt.Errorf("chat: no DM relays known for %s (no kind 10050 list found, no hints, no fallback relays)", pubkey)
	}
	return fb, nil
}

// learnHandle looks for handle claims made by pubkey (on our relay, the
// discovery relays and the contact's known relays) and, if the newest names
// a handle that this key really holds (see resolveHandle), records it, so a
// conversation shows who someone is even when they wrote first. A handle
// already known for the key is looked up again only with recheck: if it
// was rotated to another key or revoked since, resolveHandle forgets it
// for this key.
func (s *Service) learnHandle(ctx context.Context, pubkey string, recheck bool) {
	c, _, err := s.st.contact(ctx, pubkey)
	if err != nil || c.Handle != "" && !recheck {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	handle := c.Handle
	if handle == "" {
		var newest *identity.Claim
		for _, u := range dedupRelays(slices.Concat([]string{s.cfg.RelayURL}, s.cfg.DiscoveryRelays, c.Relays)) {
			evts, err := s.query(lctx, u, nostr.Filter{Kinds: []int{identity.KindHandleClaim}, Authors: []string{pubkey}, Limit: 20})
			if err != nil {
				continue
			}
			for _, e := range evts {
				cl, err := identity.ValidateClaim(e)
				if err == nil && cl.PubKey == pubkey && (newest == nil || cl.CreatedAt > newest.CreatedAt) {
					newest = cl
				}
			}
		}
		if newest == nil {
			return
		}
		handle = newest.Handle
	}
	held := &Contact{}
	if err := s.resolveHandle(lctx, handle, held); err != nil || held.PubKey != pubkey {
		s.log.Debug("claimed handle is not held by this key", "handle", handle, "pubkey", pubkey, "err", err)
		return
	}
	held.Relays = dedupRelays(slices.Concat(c.Relays, held.Relays))
	if err := s.st.saveContact(ctx, held, 0); err != nil {
		s.log.Warn("saving a learnt contact", "err", err)
	}
}

// learnSender runs learnHandle for a message's sender in the background, at
// most once every ten minutes per key.
func (s *Service) learnSender(pubkey string) {
	s.learnMu.Lock()
	if s.learnt == nil {
		s.learnt = map[string]time.Time{}
	}
	if last, ok := s.learnt[pubkey]; ok && s.now().Sub(last) < 10*time.Minute {
		s.learnMu.Unlock()
		return
	}
	s.learnt[pubkey] = s.now()
	s.learnMu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.learnHandle(s.ctx, pubkey, true)
	}()
}
