package anchor

import (
	"context"
	"encoding/json"
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
