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
//   - @handle: a valid kind 3780 handle claim with ["n", handle], looked up
//     on the own relay and the discovery relays. When several keys claim
//     it, Config.Verdict (the anchoring layer) decides if it can; otherwise
//     the earliest claim wins and the verdict says so.
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
		s.learnHandle(ctx, c.PubKey)
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
		evts, err := s.query(lctx, u, nostr.Filter{Kinds: []int{identity.KindHandleClaim}, Tags: nostr.TagMap{"n": {h}}, Limit: 100})
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
	if len(claims) == 0 {
		return fmt.Errorf("%w: no claim of @%s found", ErrUnknownContact, h)
	}
	// Earliest claim first (the anchoring layer may overrule via Verdict).
	slices.SortFunc(claims, func(a, b *identity.Claim) int {
		if a.CreatedAt != b.CreatedAt {
			return int(a.CreatedAt - b.CreatedAt)
		}
		return strings.Compare(a.ID, b.ID)
	})
	// The latest claim of the winning key carries its current relays.
	win := claims[0]
	for _, cl := range claims {
		if cl.PubKey == win.PubKey {
			win = cl
		}
	}
	c.PubKey, c.Handle, c.Relays, c.LNNode = win.PubKey, h, win.Relays, win.LNNode
	keys := map[string]bool{}
	for _, cl := range claims {
		keys[cl.PubKey] = true
	}
	if len(keys) > 1 && s.cfg.Verdict == nil {
		c.Verdict = fmt.Sprintf("unanchored: %d keys claim @%s, earliest shown", len(keys), h)
	}
	return nil
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
// a handle that this key really holds under the earliest-claim rule, records
// it, so a conversation shows who someone is even when they wrote first.
func (s *Service) learnHandle(ctx context.Context, pubkey string) {
	c, _, err := s.st.contact(ctx, pubkey)
	if err != nil || c.Handle != "" {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
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
	held := &Contact{}
	if err := s.resolveHandle(lctx, newest.Handle, held); err != nil || held.PubKey != pubkey {
		s.log.Debug("claimed handle is held by another key", "handle", newest.Handle, "pubkey", pubkey)
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
		s.learnHandle(s.ctx, pubkey)
	}()
}
