package payments

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/chat"
	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/internal/relaytest"
	"github.com/anchorchat/anchorchat/internal/testutil"
	"github.com/anchorchat/anchorchat/storage"
)

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("PAYMENTS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// testRelay is a real relay (internal/relaytest) with this package's names.
type testRelay struct {
	*relaytest.Relay
	store *storage.Store
	url   string
}

func startRelay(t testing.TB, owner string, allow ...string) *testRelay {
	t.Helper()
	r := relaytest.Start(t, relaytest.Options{Owner: owner, Allow: allow})
	return &testRelay{Relay: r, store: r.Store, url: r.URL}
}

// stop takes the relay off the network; start brings it back on the same address and store.
func (r *testRelay) stop()  { r.Stop() }
func (r *testRelay) start() { r.Restart() }

func (r *testRelay) save(t testing.TB, evt *nostr.Event) {
	t.Helper()
	if err := r.store.Save(context.Background(), evt); err != nil {
		t.Fatal(err)
	}
}

func newKey(t testing.TB) *identity.Key {
	t.Helper()
	k, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func dmRelayList(t testing.TB, k *identity.Key, relays ...string) *nostr.Event {
	t.Helper()
	tags := nostr.Tags{}
	for _, r := range relays {
		tags = append(tags, nostr.Tag{"relay", r})
	}
	evt := &nostr.Event{Kind: chat.KindDMRelayList, CreatedAt: nostr.Now(), Tags: tags}
	if err := k.Sign(evt); err != nil {
		t.Fatal(err)
	}
	return evt
}

func claim(t testing.TB, k *identity.Key, handle, lnNode string, relays ...string) *nostr.Event {
	t.Helper()
	evt, err := identity.NewClaim(k, identity.ClaimParams{Handle: handle, LNNode: lnNode, Relays: relays})
	if err != nil {
		t.Fatal(err)
	}
	return evt
}

// eventually is testutil.Eventually.
func eventually(t testing.TB, d time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	testutil.Eventually(t, d, what, cond)
}
