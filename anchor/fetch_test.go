package anchor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/internal/relaytest"
	"github.com/anchorchat/anchorchat/storage"
	"github.com/nbd-wtf/go-nostr"
)

// forgingRelay answers every REQ with evt's copy under a broken signature
// (the id still matches: it does not cover the signature), then EOSE.
func forgingRelay(t *testing.T, evt *nostr.Event) string {
	t.Helper()
	forged := *evt
	forged.Sig = strings.Repeat("ab", 64)
	raw, _ := json.Marshal(forged)
	return relaytest.Scripted(t, func(env nostr.Envelope) []string {
		req, ok := env.(*nostr.ReqEnvelope)
		if !ok {
			return nil
		}
		sub, _ := json.Marshal(req.SubscriptionID)
		return []string{`["EVENT",` + string(sub) + `,` + string(raw) + `]`, `["EOSE",` + string(sub) + `]`}
	})
}

// A relay that serves a claim with a broken signature, asked first, does
// not hide the genuine claim another relay has.
func TestFetchSkipsForgedCopies(t *testing.T) {
	gina := newKey(t)
	genuine := claim(t, gina, "gina")
	real := relaytest.Start(t, relaytest.Options{Open: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := real.Store.Save(ctx, genuine); err != nil {
		t.Fatal(err)
	}
	relays := []string{forgingRelay(t, genuine), real.URL}
	for _, q := range []Query{{Handle: "gina"}, {PubKey: gina.PublicKey()}} {
		claims, _, err := Fetch(ctx, relays, q, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(claims) != 1 || claims[0].Sig != genuine.Sig {
			t.Fatalf("%+v: fetched %v, want the genuine claim", q, claims)
		}
	}
}

// Claims for a handle by anyone, newer than the genuine one, more than a
// page of them: Fetch pages back past them to the genuine claim (it used to
// take one page of 500, so 500 junk events hid the earliest claim).
func TestFetchPagesPastAFlood(t *testing.T) {
	gina := newKey(t)
	genuine, err := identity.NewClaim(gina, identity.ClaimParams{Handle: "gina", CreatedAt: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	real := relaytest.Start(t, relaytest.Options{Open: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := real.Store.Save(ctx, genuine); err != nil {
		t.Fatal(err)
	}
	for range FetchLimit + 100 {
		if err := real.Store.Save(ctx, claim(t, newKey(t), "gina")); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []Query{{Handle: "gina"}, {PubKey: gina.PublicKey()}} {
		claims, _, err := Fetch(ctx, []string{real.URL}, q, nil)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, c := range claims {
			found = found || c.ID == genuine.ID
		}
		if !found {
			t.Fatalf("%+v: the genuine claim is not among the %d fetched", q, len(claims))
		}
	}
}

// Relays return a second's events lowest id first, so FetchLimit+10 junk
// claims of @gina, all with the genuine claim's created_at and lower ids,
// fill every page at that second. Fetch reads such a second alone, kind
// by kind, asking for as many events as the relay returns at once (its
// NIP-11 max_limit, 1,000 here): the genuine claim is found and the answer
// is known complete. Paging used to step past the second after a page with
// nothing new, so far fewer events than FetchPages*FetchLimit hid the
// earliest claim (compare TestFetchPagesPastAFlood, whose junk is newer).
func TestFetchReadsACrowdedSecondAlone(t *testing.T) {
	gina := newKey(t)
	at := time.Now().Add(-time.Hour).Truncate(time.Second)
	genuine, err := identity.NewClaim(gina, identity.ClaimParams{Handle: "gina", CreatedAt: at})
	if err != nil {
		t.Fatal(err)
	}
	real := relaytest.Start(t, relaytest.Options{Open: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := real.Store.Save(ctx, genuine); err != nil {
		t.Fatal(err)
	}
	for n := 0; n < FetchLimit+10; {
		e, err := identity.NewClaim(newKey(t), identity.ClaimParams{Handle: "gina", CreatedAt: at})
		if err != nil {
			t.Fatal(err)
		}
		if e.ID > genuine.ID {
			continue // the flooder keeps only ids that sort first
		}
		if err := real.Store.Save(ctx, e); err != nil {
			t.Fatal(err)
		}
		n++
	}
	claims, _, err := Fetch(ctx, []string{real.URL}, Query{Handle: "gina"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range claims {
		if c.ID == genuine.ID {
			return
		}
	}
	t.Fatalf("the genuine claim is not among the %d fetched (%d junk events of the same second)", len(claims), FetchLimit+10)
}

// A second holding as many events as the relay returns at once (its
// max_limit, 1,000) may hide any number more, lowest ids first: here
// Gina's claim, whose id sorts after 1,000 junk claims of the same second.
// Fetch returns what it found with ErrIncomplete, and the verifier names
// no holder (INCOMPLETE) rather than Mallory, whose later anchored claim
// is all that can be seen.
func TestFetchFailsClosedOnAFullSecond(t *testing.T) {
	// relay.DefaultConfig's max-limit (which relaytest keeps), and a relay
	// that caps below a page of FetchLimit and says so in NIP-11 (it never
	// fills a page, so its crowded second must be judged by its own cap).
	for _, maxLimit := range []int{1000, 100} {
		t.Run(fmt.Sprint("max_limit ", maxLimit), func(t *testing.T) { fetchFailsClosedOnAFullSecond(t, maxLimit) })
	}
}

func fetchFailsClosedOnAFullSecond(t *testing.T, maxLimit int) {
	at := time.Now().Add(-time.Hour).Truncate(time.Second)
	var crowd []*nostr.Event
	for range maxLimit + 1 {
		e, err := identity.NewClaim(newKey(t), identity.ClaimParams{Handle: "gina", CreatedAt: at})
		if err != nil {
			t.Fatal(err)
		}
		crowd = append(crowd, e)
	}
	slices.SortFunc(crowd, func(a, b *nostr.Event) int { return strings.Compare(a.ID, b.ID) })
	genuine := crowd[maxLimit] // Gina's: the last of its second
	mallory := newKey(t)
	m := claim(t, mallory, "gina")
	chain, attM := attested(t, newKey(t), m, 200)

	rl := relaytest.Start(t, relaytest.Options{Open: true, MaxLimit: maxLimit})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, e := range append(crowd, m, attM) {
		if err := rl.Store.Save(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	failsClosed(t, ctx, rl.URL, chain, genuine, mallory, "created_at")
}

// failsClosed checks a relay whose evidence for @gina Fetch cannot read
// completely: Fetch says so (ErrIncomplete, its error naming why), Gina's
// genuine claim is out of reach and what is found names Mallory (the
// premise), and the verifier names nobody (INCOMPLETE, why in its reason,
// no evidence kept), asked for the handle or for Mallory's key.
func failsClosed(t *testing.T, ctx context.Context, url string, chain *memChain, genuine *nostr.Event, mallory *identity.Key, why string) {
	t.Helper()
	claims, atts, err := Fetch(ctx, []string{url}, Query{Handle: "gina"}, nil)
	if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), why) {
		t.Fatalf("fetch: %v, want ErrIncomplete naming %q", err, why)
	}
	if slices.ContainsFunc(claims, func(e *nostr.Event) bool { return e.ID == genuine.ID }) {
		t.Fatal("the premise: Gina's claim is out of reach")
	}
	// What was found names Mallory...
	if v, err := Verify(ctx, chain, Query{Handle: "gina"}, claims, atts, Options{}); err != nil || v.Status != Verified || v.PubKey != mallory.PublicKey() {
		t.Fatalf("the premise: on what was found the verdict is %s %v", v, err)
	}
	// ...so the verifier names nobody.
	vf := &Verifier{Chain: chain, Relays: []string{url}, CacheTTL: -1}
	for _, q := range []Query{{Handle: "gina"}, {Handle: "gina", PubKey: mallory.PublicKey()}} {
		v, err := vf.Check(ctx, q)
		if err != nil || v.Status != Incomplete || len(v.Evidence()) != 0 || !strings.Contains(v.Reason, why) {
			t.Fatalf("%+v: %s %v, want INCOMPLETE naming %q", q, v, err, why)
		}
	}
}

// floodedRelay holds Gina's genuine claim, then n junk claims of @gina by
// throwaway keys, one a second after it, and Mallory's later claim with
// its attestation (the newest events): what a verifier that never reaches
// Gina's claim sees is Mallory's anchored claim alone.
func floodedRelay(t *testing.T, o relaytest.Options, n int) (rl *relaytest.Relay, genuine *nostr.Event, mallory *identity.Key, chain *memChain) {
	t.Helper()
	gina := newKey(t)
	at := time.Now().Add(-time.Duration(n+3600) * time.Second).Truncate(time.Second)
	genuine, err := identity.NewClaim(gina, identity.ClaimParams{Handle: "gina", CreatedAt: at})
	if err != nil {
		t.Fatal(err)
	}
	evts := []*nostr.Event{genuine}
	for i := range n {
		e, err := identity.NewClaim(newKey(t), identity.ClaimParams{Handle: "gina", CreatedAt: at.Add(time.Duration(i+1) * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		evts = append(evts, e)
	}
	mallory = newKey(t)
	m := claim(t, mallory, "gina")
	chain, attM := attested(t, newKey(t), m, 200)
	evts = append(evts, m, attM)
	rl = relaytest.Start(t, o)
	errs := make(chan error, len(evts))
	for _, e := range evts {
		rl.Store.SaveAsync(e, func(err error) { errs <- err })
	}
	for range evts {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	return rl, genuine, mallory, chain
}

// More junk claims of @gina, each in its own second, than FetchPages pages
// hold (the relay answers 100 at a time here, so 2,100 of them suffice):
// Gina's claim stays unread behind them. Fetch used to stop paging there
// without a word, and the verifier named Mallory; now the evidence is
// incomplete and nobody is named.
func TestFetchFailsClosedPastItsPages(t *testing.T) {
	rl, genuine, mallory, chain := floodedRelay(t, relaytest.Options{Open: true, MaxLimit: 100}, 2100)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	failsClosed(t, ctx, rl.URL, chain, genuine, mallory, "more than 20 pages")
}

// A relay that answers the first page and then refuses (here with CLOSED,
// as a relay rate-limiting a verifier's paging would) leaves older events
// unread: incomplete, not a verdict on the newest page alone. A relay
// that refuses the first page is skipped like one that cannot be reached.
func TestFetchFailsClosedWhenPagingBreaksOff(t *testing.T) {
	src, _, _, chain := floodedRelay(t, relaytest.Options{Open: true}, FetchLimit+50)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first, err := src.Store.Query(ctx, nostr.Filter{Tags: nostr.TagMap{"n": {"gina"}}, Limit: FetchLimit}, storage.Visibility{})
	if err != nil || len(first) != FetchLimit {
		t.Fatalf("the premise: a full first page, got %d %v", len(first), err)
	}
	var page []string
	for _, e := range first {
		raw, _ := json.Marshal(e)
		page = append(page, string(raw))
	}
	scripted := func(answered int) string {
		var n atomic.Int32
		return relaytest.Scripted(t, func(env nostr.Envelope) []string {
			req, ok := env.(*nostr.ReqEnvelope)
			if !ok {
				return nil
			}
			sub, _ := json.Marshal(req.SubscriptionID)
			if int(n.Add(1)) > answered {
				return []string{`["CLOSED",` + string(sub) + `,"rate-limited: slow down"]`}
			}
			var out []string
			for _, e := range page {
				out = append(out, `["EVENT",`+string(sub)+`,`+e+`]`)
			}
			return append(out, `["EOSE",`+string(sub)+`]`)
		})
	}
	_, _, err = Fetch(ctx, []string{scripted(1)}, Query{Handle: "gina"}, nil)
	if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "failed after 1 pages") {
		t.Fatalf("fetch: %v, want ErrIncomplete for the broken-off paging", err)
	}
	vf := &Verifier{Chain: chain, Relays: []string{scripted(1)}, CacheTTL: -1}
	if v, err := vf.Check(ctx, Query{Handle: "gina"}); err != nil || v.Status != Incomplete {
		t.Fatalf("verdict %s %v, want INCOMPLETE", v, err)
	}
	// Refused from the first page: skipped; the complete relay decides.
	claims, _, err := Fetch(ctx, []string{scripted(0), src.URL}, Query{Handle: "gina"}, nil)
	if err != nil || len(claims) != FetchLimit+52 {
		t.Fatalf("fetch with a refusing relay beside a good one: %d claims, %v", len(claims), err)
	}
}

// A Verifier reads a relay's NIP-11 max_limit once per MaxLimitTTL, not
// at every verification (Fetch reads it before judging any one-second
// page, which nearly every fetch has): found or not, the answer is kept;
// a read cut short by the caller's context is not.
func TestMaxLimitIsReadOncePerTTL(t *testing.T) {
	var hits atomic.Int32
	var status atomic.Int32
	status.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.Header.Get("Accept") != "application/nostr+json" {
			http.Error(w, "not NIP-11", http.StatusBadRequest)
			return
		}
		w.WriteHeader(int(status.Load()))
		fmt.Fprintf(w, `{"limitation":{"max_limit":%d}}`, 300+hits.Load())
	}))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	now := time.Now()
	c := &maxLimits{now: func() time.Time { return now }}
	ctx := context.Background()
	for range 3 {
		if n, err := c.get(ctx, url); n != 301 || err != nil || hits.Load() != 1 {
			t.Fatalf("got %d %v after %d reads, want 301 from the first read", n, err, hits.Load())
		}
	}
	now = now.Add(MaxLimitTTL)
	if n, err := c.get(ctx, url); n != 302 || err != nil || hits.Load() != 2 {
		t.Fatalf("after the TTL: %d %v after %d reads, want 302 read again", n, err, hits.Load())
	}
	// A relay without a document is asked again only after the TTL.
	status.Store(http.StatusNotFound)
	now = now.Add(MaxLimitTTL)
	if n, err := c.get(ctx, url); n != 0 || err == nil || hits.Load() != 3 {
		t.Fatalf("no document: %d %v after %d reads", n, err, hits.Load())
	}
	if n, err := c.get(ctx, url); n != 0 || err != nil || hits.Load() != 3 {
		t.Fatalf("no document, asked again at once: %d %v after %d reads, want the kept answer", n, err, hits.Load())
	}
	// A cancelled read is not kept.
	now = now.Add(MaxLimitTTL)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.get(cancelled, url); err == nil {
		t.Fatal("a cancelled read succeeded")
	}
	status.Store(http.StatusOK)
	if n, err := c.get(ctx, url); err != nil || n == 0 {
		t.Fatalf("after a cancelled read: %d %v, want a fresh read", n, err)
	}
}

// Asked about a key alone, the verifier decides the key's lowest handle
// (handleOf), so that handle's claims by others must be fetched. Mallory
// claims @alice, held by Alice since an earlier anchoring, and 300 more
// handles; Fetch used to follow FetchHandles of them picked at random
// (map order), so @alice's other claims were usually never asked for and
// Mallory was VERIFIED as @alice.
func TestFetchFollowsTheKeysDecidedHandle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice, mallory, attestor := newKey(t), newKey(t), newKey(t)
	a, m := claim(t, alice, "alice"), claim(t, mallory, "alice")
	chainA, attA := attested(t, attestor, a, 100)
	chainM, attM := attested(t, attestor, m, 200)
	chain := mergeChains(chainA, chainM)
	rl := relaytest.Start(t, relaytest.Options{Open: true})
	evts := []*nostr.Event{a, attA, m, attM}
	for i := range 300 {
		evts = append(evts, claim(t, mallory, fmt.Sprintf("zz%03d", i)))
	}
	for _, e := range evts {
		if err := rl.Store.Save(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	claims, _, err := Fetch(ctx, []string{rl.URL}, Query{PubKey: mallory.PublicKey()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(claims, func(e *nostr.Event) bool { return e.ID == a.ID }) {
		t.Fatalf("Alice's claim of @alice, the handle decided for Mallory's key, is not among the %d fetched", len(claims))
	}
	vf := &Verifier{Chain: chain, Relays: []string{rl.URL}, CacheTTL: -1}
	v, err := vf.Check(ctx, Query{PubKey: mallory.PublicKey()})
	if err != nil || v.Status != Conflict || v.Holder == nil || v.Holder.PubKey != alice.PublicKey() {
		t.Fatalf("Mallory's key: %s %v, want CONFLICT held by Alice", v, err)
	}
}
