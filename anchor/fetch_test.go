package anchor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/internal/relaytest"
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
	claims, atts, err := Fetch(ctx, []string{rl.URL}, Query{Handle: "gina"}, nil)
	if !errors.Is(err, ErrIncomplete) {
		t.Fatalf("fetch: %v, want ErrIncomplete", err)
	}
	if slices.ContainsFunc(claims, func(e *nostr.Event) bool { return e.ID == genuine.ID }) {
		t.Fatal("the premise: the last claim of the full second is out of reach")
	}
	// What was found names Mallory...
	if v, err := Verify(ctx, chain, Query{Handle: "gina"}, claims, atts, Options{}); err != nil || v.Status != Verified || v.PubKey != mallory.PublicKey() {
		t.Fatalf("the premise: on what was found the verdict is %s %v", v, err)
	}
	// ...so the verifier names nobody.
	vf := &Verifier{Chain: chain, Relays: []string{rl.URL}, CacheTTL: -1}
	for _, q := range []Query{{Handle: "gina"}, {Handle: "gina", PubKey: mallory.PublicKey()}} {
		v, err := vf.Check(ctx, q)
		if err != nil || v.Status != Incomplete || len(v.Evidence()) != 0 || !strings.Contains(v.Reason, "created_at") {
			t.Fatalf("%+v: %s %v, want INCOMPLETE", q, v, err)
		}
	}
}
