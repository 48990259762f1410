package anchor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/internal/nostrclient"
	"github.com/nbd-wtf/go-nostr"
)

// Fetch's bounds: events per relay query (a page), pages per filter and
// relay, handles followed for one key, and the limit asked for when one
// second is read alone (relays cap it: this project's relay at 1,000).
const (
	FetchLimit       = 500
	FetchPages       = 20
	FetchHandles     = 16
	FetchSecondLimit = 1000
)

// ErrIncomplete is wrapped by Fetch's error when a relay holds more events
// of one second than it returns in one answer (relays return a second's
// events lowest id first, and anyone can publish events tagged with a
// handle, any id and created_at they like), so what that second may hide
// is unknown. Fetch then still returns what it found; Verify, given the
// error in Options.Incomplete, names no holder (INCOMPLETE).
var ErrIncomplete = errors.New("anchor: fetch incomplete")

func tagOf(e *nostr.Event, name string) string {
	if e == nil {
		return ""
	}
	if t := e.Tags.Find(name); t != nil {
		return t[1]
	}
	return ""
}

// relayCap is what Fetch knows of how many events a relay returns in one
// answer: at least what it advertises as its NIP-11 limitation.max_limit
// (read before the first page that lies within one second), else at least
// FetchLimit, and at least the longest answer it gave; but no more than
// the length of a page it showed to be cut short (the next page, until
// that page's oldest second, brought older events).
type relayCap struct {
	served     int  // the longest answer it gave
	short      int  // a cap it showed (0: none)
	advertised int  // its NIP-11 max_limit (0: none)
	asked      bool // NIP-11 read
}

// full is the least number of events in an answer asked with limit that
// may have been cut short by the limit or by the relay's cap: an answer
// with fewer is all the relay has for the filter.
func (c *relayCap) full(limit int) int {
	bound := max(FetchLimit, c.served)
	if c.advertised > 0 {
		bound = max(c.advertised, c.served)
	}
	if c.short > 0 {
		bound = min(bound, c.short)
	}
	return min(limit, bound)
}

// maxNIP11 bounds the NIP-11 document Fetch reads.
const maxNIP11 = 64 << 10

// advertisedMaxLimit returns limitation.max_limit from the relay's NIP-11
// document (HTTP GET of the relay URL with Accept: application/nostr+json),
// or 0 when it has none or cannot be read.
func advertisedMaxLimit(ctx context.Context, relayURL string) (int, error) {
	u, err := nostrclient.HTTPURL(relayURL)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, fmt.Errorf("NIP-11 request: %w", err)
	}
	req.Header.Set("Accept", "application/nostr+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("NIP-11 request: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("NIP-11 request: HTTP %s", resp.Status)
	}
	var doc struct {
		Limitation struct {
			MaxLimit int `json:"max_limit"`
		} `json:"limitation"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxNIP11)).Decode(&doc); err != nil {
		return 0, fmt.Errorf("NIP-11 document: %w", err)
	}
	return max(0, doc.Limitation.MaxLimit), nil
}

// MaxLimitTTL is how long a Verifier trusts a relay's NIP-11
// limitation.max_limit (or its lack of one) before reading it again.
const MaxLimitTTL = 10 * time.Minute

// maxLimits remembers relays' advertised max_limit, so that a verifier
// reads each relay's NIP-11 document once per MaxLimitTTL rather than at
// every verification.
type maxLimits struct {
	mu  sync.Mutex
	m   map[string]maxLimitEntry
	now func() time.Time // time.Now if nil
}

type maxLimitEntry struct {
	n  int
	at time.Time
}

// get returns the relay's max_limit, from the cache if fresh, else read
// (a document that cannot be read counts as none, and is asked again
// only after MaxLimitTTL too, so a relay without NIP-11 costs one GET per
// TTL, not one per verification). A nil cache always reads.
func (c *maxLimits) get(ctx context.Context, relayURL string) (int, error) {
	if c == nil {
		return advertisedMaxLimit(ctx, relayURL)
	}
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	c.mu.Lock()
	e, ok := c.m[relayURL]
	c.mu.Unlock()
	if ok && now().Sub(e.at) < MaxLimitTTL {
		return e.n, nil
	}
	n, err := advertisedMaxLimit(ctx, relayURL)
	if ctx.Err() != nil {
		return n, err // a cancelled read says nothing about the relay
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]maxLimitEntry{}
	}
	c.m[relayURL] = maxLimitEntry{n, now()}
	c.mu.Unlock()
	return n, err
}

// Fetch collects, from relays, the claim events (3780, 3781) and
// attestations (3782) needed to decide q: for a key, first its claims and
// attestations (to learn its handles), then everything tagged with the
// handle (so competing claims are seen). Relays that fail are logged and
// skipped; the error is returned only if every relay failed. Events whose id
// or signature does not check never get here (the relay client drops
// them); malformed attestation events are dropped and logged at debug level.
//
// Each filter is paged back in time per relay, newest first, FetchLimit
// events a page (see query below). A second that fills a whole page is
// read again alone, once per kind, asking FetchSecondLimit events; an
// answer shorter than both that and what the relay returns at most (its
// NIP-11 limitation.max_limit, else FetchLimit) is all it has. Otherwise
// the events found are returned with an error wrapping ErrIncomplete. No
// narrower filter could list the rest: a rotation is signed by a key not
// known yet and an attestation by anyone, so neither authors nor "#e"
// bound what the second may hide, and relays have no id ranges.
//
// A relay is assumed to return up to FetchLimit events an answer when
// that many match, unless a page it cut short showed a lower cap (from
// then on that cap is used).
//
// Paging ends at a relay's first empty page. A relay that still has
// events after FetchPages pages, or fails to answer a page after the
// first, has older events unread (a flood of newer events can push an
// earliest claim or a revocation there): that too wraps ErrIncomplete.
// A relay that fails the first page of a filter is skipped, as one that
// cannot be reached.
func Fetch(ctx context.Context, relays []string, q Query, log *slog.Logger) ([]*nostr.Event, []*Attestation, error) {
	return fetch(ctx, relays, q, log, nil, nil)
}

// keyHandles returns the handles of pk's valid claims among claims and
// the claims embedded in atts, sorted. Verify decides a query naming only
// a key on the first of them (handleOf), so that handle's evidence must
// have been fetched, whatever other handles the key claimed.
func keyHandles(pk string, claims []*nostr.Event, atts []*Attestation) []string {
	seen := map[string]bool{}
	var hs []string
	check := func(e *nostr.Event) {
		if e == nil || e.PubKey != pk || seen[e.ID] {
			return
		}
		seen[e.ID] = true
		if c, err := identity.ValidateClaim(e); err == nil && !slices.Contains(hs, c.Handle) {
			hs = append(hs, c.Handle)
		}
	}
	for _, e := range claims {
		check(e)
	}
	for _, a := range atts {
		if a != nil {
			check(a.Claim)
		}
	}
	slices.Sort(hs)
	return hs
}

// fetch is Fetch, reading relays' max_limit through limits, and noting in
// queried (if not nil) the handles whose events it asked for.
func fetch(ctx context.Context, relays []string, q Query, log *slog.Logger, limits *maxLimits, queried map[string]bool) ([]*nostr.Event, []*Attestation, error) {
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
	caps := make([]relayCap, len(conns))
	var incomplete []string
	add := func(evts []*nostr.Event) {
		for _, e := range evts {
			// The client passes on only events whose id and signature
			// check, so a copy with a broken signature cannot take the
			// genuine event's place here.
			if seen[e.ID] == nil {
				seen[e.ID] = e
			}
		}
	}
	// second reads second t of filter f alone, kind by kind, with a larger
	// limit, and records what may still be missing.
	// learn reads the relay's advertised cap, once, before a one-second
	// page is judged: a relay capping below FetchLimit never fills a page
	// of FetchLimit.
	learn := func(r *nostrclient.Conn, c *relayCap) {
		if c.asked {
			return
		}
		c.asked = true
		var err error
		if c.advertised, err = limits.get(ctx, r.URL()); err != nil {
			log.Debug("anchor fetch: no NIP-11 max_limit", "relay", r.URL(), "err", err)
		}
	}
	second := func(r *nostrclient.Conn, c *relayCap, f nostr.Filter, t nostr.Timestamp) {
		kinds := [][]int{f.Kinds}
		if len(f.Kinds) > 1 {
			kinds = kinds[:0]
			for _, k := range f.Kinds {
				kinds = append(kinds, []int{k})
			}
		}
		for _, k := range kinds {
			g := f
			g.Kinds, g.Since, g.Until, g.Limit = k, &t, &t, FetchSecondLimit
			evts, err := r.Query(ctx, g)
			if err != nil {
				incomplete = append(incomplete, fmt.Sprintf("%s: reading kind %v at created_at %d alone: %v", r.URL(), k, t, err))
				continue
			}
			add(evts)
			if len(evts) >= c.full(FetchSecondLimit) {
				incomplete = append(incomplete, fmt.Sprintf("%s has at least %d events of kind %v at created_at %d, as many as it returns at once",
					r.URL(), len(evts), k, t))
			}
			c.served = max(c.served, len(evts))
		}
	}
	// query pages back in time through each relay, newest first, so that
	// events pushed out of one page by newer ones (anyone can publish
	// events tagged with a handle) are still found, up to FetchPages pages
	// per relay. A relay orders a page by created_at, newest first, and
	// within a second by id, lowest first, so a page that reaches back to
	// second t holds everything newer than t and the first of t's events:
	// the next page asks until t again. When a page lies within one second
	// t, it holds t's first events only; if it may have been cut short,
	// second reads t alone. Then paging goes on before t.
	query := func(f nostr.Filter) {
		f.Limit = FetchLimit
		for i, r := range conns {
			c := &caps[i]
			g := f
			prevLen, prevOldest := 0, nostr.Timestamp(0)
			read := false // the relay's last page was read
			for page := range FetchPages {
				evts, err := r.Query(ctx, g)
				if err != nil && page == 0 {
					// Like a relay that cannot be reached: skipped.
					log.Debug("anchor fetch: query failed", "relay", r.URL(), "err", err)
					read = true
					break
				}
				if err != nil {
					incomplete = append(incomplete, fmt.Sprintf("%s failed after %d pages of %v, before the oldest: %v", r.URL(), page, f, err))
					read = true
					break
				}
				if len(evts) == 0 {
					read = true
					break
				}
				add(evts)
				newest, oldest := evts[0].CreatedAt, evts[0].CreatedAt
				for _, e := range evts {
					newest, oldest = max(newest, e.CreatedAt), min(oldest, e.CreatedAt)
				}
				if prevLen > 0 && prevLen < FetchLimit && oldest < prevOldest && (c.short == 0 || prevLen < c.short) {
					c.short = prevLen // the previous page was cut short by the relay
				}
				if newest == oldest {
					learn(r, c)
				}
				full := len(evts) >= c.full(FetchLimit)
				c.served = max(c.served, len(evts))
				prevLen, prevOldest = 0, 0
				if newest != oldest {
					prevLen, prevOldest = len(evts), oldest
					until := oldest // the same second again: the page may end inside it
					g.Until = &until
					continue
				}
				if full {
					second(r, c, f, oldest)
				}
				if oldest == 0 {
					read = true
					break
				}
				until := oldest - 1
				g.Until = &until
			}
			if !read {
				incomplete = append(incomplete, fmt.Sprintf("%s holds more than %d pages of %v", r.URL(), FetchPages, f))
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
		// The handles this key claimed: from its own valid claims, and from
		// the valid claims embedded in attestations (anyone can sign an
		// attestation tagged with any handle; only one embedding this key's
		// claim says something about it), at most FetchHandles of them,
		// lowest first: Verify decides the lowest.
		hs := seenKeyHandles(q.PubKey, seen)
		for _, h := range hs[:min(len(hs), FetchHandles)] {
			handles[h] = true
		}
	}
	for h := range handles {
		query(nostr.Filter{Kinds: kinds, Tags: nostr.TagMap{"n": {h}}})
	}
	if q.Handle == "" {
		// An attestation found under one handle may embed a claim of this
		// key's of a lower handle, which Verify would decide: ask for that
		// one too.
		for range FetchHandles {
			hs := seenKeyHandles(q.PubKey, seen)
			if len(hs) == 0 || handles[hs[0]] {
				break
			}
			handles[hs[0]] = true
			query(nostr.Filter{Kinds: kinds, Tags: nostr.TagMap{"n": {hs[0]}}})
		}
		if hs := seenKeyHandles(q.PubKey, seen); len(hs) > 0 && !handles[hs[0]] {
			incomplete = append(incomplete, fmt.Sprintf("the key's handle %s was found too late to be asked for", hs[0]))
		}
	}
	for h := range handles {
		if queried != nil {
			queried[h] = true
		}
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
	if len(incomplete) > 0 {
		more := ""
		if len(incomplete) > 3 {
			more = fmt.Sprintf(" (and %d more)", len(incomplete)-3)
		}
		return claims, atts, fmt.Errorf("%w: %s%s", ErrIncomplete, strings.Join(incomplete[:min(3, len(incomplete))], "; "), more)
	}
	return claims, atts, nil
}

// seenKeyHandles is keyHandles over fetched events (claims and
// attestation events).
func seenKeyHandles(pk string, seen map[string]*nostr.Event) []string {
	var claims []*nostr.Event
	var atts []*Attestation
	for _, e := range seen {
		if e.Kind != KindAttestation {
			claims = append(claims, e)
		} else if !strings.Contains(e.Content, pk) {
			continue // its claim is not the key's (cheap: no signature check)
		} else if a, err := ParseAttestation(e); err == nil {
			atts = append(atts, a)
		}
	}
	return keyHandles(pk, claims, atts)
}

// Source supplies claim events and attestations for a query (the node's
// batcher store, a cache, ...).
type Source func(ctx context.Context, q Query) ([]*nostr.Event, []*Attestation, error)

// BatcherSource is a Source over a batcher's store: the evidence kept
// from earlier verifications (KeepEvidence), then the node's own claims
// and those it anchored for others. Every attestation it returns is
// Local: Verify checks them all, outside Options.MaxProofs, so however
// many claims of a handle others have the node anchor, the kept evidence
// is never crowded out.
func BatcherSource(b *Batcher) Source {
	return func(ctx context.Context, q Query) ([]*nostr.Event, []*Attestation, error) {
		kc, ka, err := b.Evidence(ctx, q)
		if err != nil {
			return nil, nil, err
		}
		claims, attEvts, err := b.Attestations(ctx, q.Handle)
		if err != nil {
			return nil, nil, err
		}
		atts, _ := ParseAttestations(attEvts)
		atts = append(ka, atts...)
		for _, a := range atts {
			a.Local = true
		}
		return append(kc, claims...), atts, nil
	}
}

// Verifier answers verification queries from relays and local sources
// against a chain, with a small cache for chat views. It reads each
// relay's NIP-11 max_limit at most once per MaxLimitTTL.
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

	mu     sync.Mutex
	cache  map[Query]cached
	limits maxLimits
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
	// Local sources first: the same attestation from a relay then counts
	// as local (Verify checks at most Options.MaxProofs attestations from
	// relays, but every local one).
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
	opts := vf.Options
	queried := map[string]bool{} // handles asked of the relays
	fromRelays := func(q Query) {
		if len(vf.Relays) == 0 {
			return
		}
		e, a, err := fetch(ctx, vf.Relays, q, vf.Logger, &vf.limits, queried)
		switch {
		case errors.Is(err, ErrIncomplete):
			if opts.Incomplete == nil {
				opts.Incomplete = err // fail closed: Verify names no holder
			}
		case err != nil:
			errs = append(errs, err)
		}
		evts, atts = append(evts, e...), append(atts, a...)
	}
	fromRelays(q)
	if q.Handle == "" && q.PubKey != "" {
		// A key query: what the node kept is filed by handle, and the
		// holder's chain need not name this key. Ask again for the
		// handles this key's valid claims name, lowest first (at most
		// FetchHandles, like Fetch).
		seen := map[string]bool{}
		askLocal := func(h string) {
			if seen[h] {
				return
			}
			seen[h] = true
			var kept []*nostr.Event
			var keptAtts []*Attestation
			for _, src := range vf.Sources {
				if e, a, err := src(ctx, Query{Handle: h}); err == nil {
					kept, keptAtts = append(kept, e...), append(keptAtts, a...)
				}
			}
			// Local first: Verify counts the first copy of an attestation.
			evts, atts = append(kept, evts...), append(keptAtts, atts...)
		}
		hs := keyHandles(q.PubKey, evts, atts)
		for _, h := range hs[:min(len(hs), FetchHandles)] {
			askLocal(h)
		}
		// Verify decides the key's lowest handle: its evidence must have
		// been asked of every source and relay (a local source may name
		// a handle Fetch did not ask for, or the events found under one
		// handle a lower one).
		done := func(h string) bool { return seen[h] && (len(vf.Relays) == 0 || queried[h]) }
		for range FetchHandles {
			hs := keyHandles(q.PubKey, evts, atts)
			if len(hs) == 0 || done(hs[0]) {
				break
			}
			askLocal(hs[0])
			if !queried[hs[0]] {
				fromRelays(Query{Handle: hs[0]})
				queried[hs[0]] = true
			}
		}
		if hs := keyHandles(q.PubKey, evts, atts); len(hs) > 0 && !done(hs[0]) && opts.Incomplete == nil {
			opts.Incomplete = fmt.Errorf("%w: the key's handle %s was found too late to be asked for", ErrIncomplete, hs[0])
		}
	}
	if len(evts) == 0 && len(atts) == 0 && len(errs) > 0 {
		return Verdict{}, errors.Join(errs...)
	}
	v, err := Verify(ctx, vf.Chain, q, evts, atts, opts)
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
