package anchor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/internal/nostrclient"
	"github.com/nbd-wtf/go-nostr"
)

// Fetch's bounds: events per relay query, pages per filter and relay, and
// handles followed for one key.
const (
	FetchLimit   = 500
	FetchPages   = 20
	FetchHandles = 16
)

func tagOf(e *nostr.Event, name string) string {
	if e == nil {
		return ""
	}
	if t := e.Tags.Find(name); t != nil {
		return t[1]
	}
	return ""
}

// Fetch collects, from relays, the claim events (3780, 3781) and
// attestations (3782) needed to decide q: for a key, first its claims and
// attestations (to learn its handles), then everything tagged with the
// handle (so competing claims are seen). Relays that fail are logged and
// skipped; the error is returned only if every relay failed. Events whose id
// or signature does not check never get here (the relay client drops
// them); malformed attestation events are dropped and logged at debug level.
func Fetch(ctx context.Context, relays []string, q Query, log *slog.Logger) ([]*nostr.Event, []*Attestation, error) {
	if log == nil {
		log = slog.Default()
	}
	if q.Handle == "" && q.PubKey == "" {
		return nil, nil, errors.New("anchor: fetch needs a handle or a key")
	}
	conns := make([]*nostrclient.Conn, 0, len(relays))
	var errs []error
	for _, u := range relays {
		r, err := nostrclient.Dial(ctx, u, nostrclient.Options{})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", u, err))
			log.Debug("anchor fetch: relay unreachable", "relay", u, "err", err)
			continue
		}
		defer r.Close()
		conns = append(conns, r)
	}
	if len(conns) == 0 {
		return nil, nil, fmt.Errorf("anchor: fetch: no relay reachable: %w", errors.Join(errs...))
	}
	seen := map[string]*nostr.Event{}
	// query pages back in time through each relay (newest first, until
	// the oldest seen), so that events pushed out of one page by newer ones
	// (anyone can publish events tagged with a handle) are still found, up
	// to FetchPages pages per relay.
	query := func(f nostr.Filter) {
		f.Limit = FetchLimit
		for _, r := range conns {
			g := f
			for range FetchPages {
				evts, err := r.Query(ctx, g)
				if err != nil {
					log.Debug("anchor fetch: query failed", "relay", r.URL(), "err", err)
					break
				}
				if len(evts) == 0 {
					break
				}
				fresh, oldest := 0, evts[0].CreatedAt
				for _, e := range evts {
					oldest = min(oldest, e.CreatedAt)
					// The client passes on only events whose id and
					// signature check, so a copy with a broken signature
					// cannot take the genuine event's place here.
					if seen[e.ID] != nil {
						continue
					}
					seen[e.ID] = e
					fresh++
				}
				until := oldest // the same second again: a page may end inside it
				if fresh == 0 {
					if oldest == 0 {
						break
					}
					until = oldest - 1 // nothing new at or after oldest: step past it
				}
				g.Until = &until
			}
		}
	}
	kinds := []int{identity.KindHandleClaim, identity.KindHandleRevocation, KindAttestation}
	handles := map[string]bool{}
	if q.Handle != "" {
		handles[q.Handle] = true
	} else {
		query(nostr.Filter{Kinds: kinds[:2], Authors: []string{q.PubKey}})
		query(nostr.Filter{Kinds: kinds[2:], Tags: nostr.TagMap{"p": {q.PubKey}}})
		// The handles this key claimed: from its own claims, and from the
		// claims embedded in attestations (anyone can sign an attestation
		// tagged with any handle; only one embedding this key's claim says
		// something about it), at most FetchHandles of them.
		for _, e := range seen {
			var c *nostr.Event
			switch {
			case e.Kind != KindAttestation && e.PubKey == q.PubKey:
				c = e
			case e.Kind == KindAttestation:
				if a, err := ParseAttestation(e); err == nil && a.Claim != nil && a.Claim.PubKey == q.PubKey {
					c = a.Claim
				}
			}
			if t := tagOf(c, "n"); t != "" && len(handles) < FetchHandles {
				handles[t] = true
			}
		}
	}
	for h := range handles {
		query(nostr.Filter{Kinds: kinds, Tags: nostr.TagMap{"n": {h}}})
	}
	var claims, attEvts []*nostr.Event
	for _, e := range seen {
		if e.Kind == KindAttestation {
			attEvts = append(attEvts, e)
		} else {
			claims = append(claims, e)
		}
	}
	atts, perrs := ParseAttestations(attEvts)
	for _, err := range perrs {
		log.Debug("anchor fetch: dropped attestation", "err", err)
	}
	return claims, atts, nil
}

// Source supplies claim events and attestations for a query (the node's
// batcher store, a cache, ...).
type Source func(ctx context.Context, q Query) ([]*nostr.Event, []*Attestation, error)

// BatcherSource is a Source over a batcher's store: the node's own claims,
// those it anchored for others, and the evidence kept from earlier
// verifications (KeepEvidence).
func BatcherSource(b *Batcher) Source {
	return func(ctx context.Context, q Query) ([]*nostr.Event, []*Attestation, error) {
		claims, attEvts, err := b.Attestations(ctx, q.Handle)
		if err != nil {
			return nil, nil, err
		}
		atts, _ := ParseAttestations(attEvts)
		kc, ka, err := b.Evidence(ctx, q)
		if err != nil {
			return nil, nil, err
		}
		return append(claims, kc...), append(atts, ka...), nil
	}
}

// Verifier answers verification queries from relays and local sources
// against a chain, with a small cache for chat views.
type Verifier struct {
	Chain   ChainSource
	Relays  []string
	Sources []Source // consulted besides the relays
	Options Options
	// CacheTTL keeps verdicts this long (0: 1 minute; negative: no cache).
	CacheTTL time.Duration
	Logger   *slog.Logger
	// Keep, when set, is given each verdict's evidence (Verdict.Evidence)
	// to store, e.g. Batcher.KeepEvidence; a Source should then return it.
	Keep func(ctx context.Context, handle string, evts []*nostr.Event) error

	mu    sync.Mutex
	cache map[Query]cached
}

type cached struct {
	v  Verdict
	at time.Time
}

// Check fetches the evidence for q and verifies it. The error means no
// verdict could be reached (no relay, chain source down).
func (vf *Verifier) Check(ctx context.Context, q Query) (Verdict, error) {
	ttl := vf.CacheTTL
	if ttl == 0 {
		ttl = time.Minute
	}
	if ttl > 0 {
		vf.mu.Lock()
		c, ok := vf.cache[q]
		vf.mu.Unlock()
		if ok && time.Since(c.at) < ttl {
			return c.v, nil
		}
	}
	// Local sources first: Verify checks at most Options.MaxProofs
	// attestations, in this order, and what the node keeps is no flood.
	var evts []*nostr.Event
	var atts []*Attestation
	var errs []error
	for _, src := range vf.Sources {
		e, a, err := src(ctx, q)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		evts, atts = append(evts, e...), append(atts, a...)
	}
	if len(vf.Relays) > 0 {
		e, a, err := Fetch(ctx, vf.Relays, q, vf.Logger)
		if err != nil {
			errs = append(errs, err)
		}
		evts, atts = append(evts, e...), append(atts, a...)
	}
	if q.Handle == "" && q.PubKey != "" {
		// A key query: what the node kept is filed by handle, and the
		// holder's chain need not name this key. Ask again for the
		// handles this key's claims name (at most FetchHandles, like Fetch).
		seen := map[string]bool{}
		var kept []*nostr.Event
		var keptAtts []*Attestation
		ask := func(claim *nostr.Event) {
			h := handleTag(claim)
			if claim.PubKey != q.PubKey || h == "" || seen[h] || len(seen) >= FetchHandles {
				return
			}
			seen[h] = true
			for _, src := range vf.Sources {
				if e, a, err := src(ctx, Query{Handle: h}); err == nil {
					kept, keptAtts = append(kept, e...), append(keptAtts, a...)
				}
			}
		}
		for _, e := range evts {
			ask(e)
		}
		for _, a := range atts {
			if a != nil && a.Claim != nil {
				ask(a.Claim)
			}
		}
		evts, atts = append(kept, evts...), append(keptAtts, atts...)
	}
	if len(evts) == 0 && len(atts) == 0 && len(errs) > 0 {
		return Verdict{}, errors.Join(errs...)
	}
	v, err := Verify(ctx, vf.Chain, q, evts, atts, vf.Options)
	if err != nil {
		return Verdict{}, err
	}
	if vf.Keep != nil && len(v.Evidence()) > 0 {
		if err := vf.Keep(ctx, v.Handle, v.Evidence()); err != nil && vf.Logger != nil {
			vf.Logger.Warn("keeping verification evidence failed", "handle", v.Handle, "err", err)
		}
	}
	if ttl > 0 {
		vf.mu.Lock()
		if vf.cache == nil {
			vf.cache = map[Query]cached{}
		}
		vf.cache[q] = cached{v, time.Now()}
		vf.mu.Unlock()
	}
	return v, nil
}

// Hook is the chat contact verdict hook: the status of (pubkey, handle)
// as a string ("VERIFIED", "PENDING", ...), or "UNKNOWN" when no verdict
// could be reached.
func (vf *Verifier) Hook(ctx context.Context, pubkey, handle string) string {
	v, err := vf.Check(ctx, Query{Handle: handle, PubKey: pubkey})
	if err != nil {
		if vf.Logger != nil {
			vf.Logger.Debug("anchor verdict unavailable", "pubkey", pubkey, "handle", handle, "err", err)
		}
		return "UNKNOWN"
	}
	return string(v.Status)
}
