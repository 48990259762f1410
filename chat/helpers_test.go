package chat

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/internal/nostrclient"
	"github.com/anchorchat/anchorchat/internal/relaytest"
	"github.com/anchorchat/anchorchat/internal/testutil"
	"github.com/anchorchat/anchorchat/relay"
	"github.com/anchorchat/anchorchat/storage"
)

// clock is real time plus a settable offset, shared by a test's relays and
// services: backoff timers run in real time, expiry tests jump ahead.
type clock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return time.Now().Add(c.off) }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("CHAT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testRelay is a real relay (internal/relaytest) with this package's names.
type testRelay struct {
	*relaytest.Relay
	store *storage.Store
	clock *clock
	url   string
}

func startRelay(t testing.TB, clk *clock, owner string, allow ...string) *testRelay {
	t.Helper()
	r := relaytest.Start(t, relaytest.Options{Owner: owner, Allow: allow, Now: clk.Now})
	return &testRelay{Relay: r, store: r.Store, clock: clk, url: r.URL}
}

// stop takes the relay off the network; start brings it back on the same address and store.
func (r *testRelay) stop()  { r.Stop() }
func (r *testRelay) start() { r.Restart() }

// wraps returns the gift wraps for pk the relay would serve now.
func (r *testRelay) wraps(t testing.TB, pk string) []*nostr.Event {
	t.Helper()
	evts, err := r.store.Query(context.Background(), nostr.Filter{Kinds: []int{KindGiftWrap}, Tags: nostr.TagMap{"p": {pk}}}, storage.Visibility{PrivateKinds: relay.PrivateKinds, Readers: []string{pk}})
	if err != nil {
		t.Fatal(err)
	}
	return evts
}

type user struct {
	name  string
	key   *identity.Key
	relay *testRelay
	clock *clock
	db    string
	svc   *Service
}

func newKey(t testing.TB) *identity.Key {
	t.Helper()
	k, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newUser makes a key, its own relay (owner = that key) and publishes its
// kind 10050 list naming dmRelays (its own relay when none given).
func newUser(t testing.TB, clk *clock, name string) *user {
	t.Helper()
	k := newKey(t)
	u := &user{name: name, key: k, clock: clk, db: filepath.Join(t.TempDir(), name+"-chat.db")}
	u.relay = startRelay(t, clk, k.PublicKey())
	return u
}

func (u *user) publishDMRelays(t testing.TB, on string, relays ...string) {
	t.Helper()
	tags := nostr.Tags{}
	for _, r := range relays {
		tags = append(tags, nostr.Tag{"relay", r})
	}
	evt := &nostr.Event{Kind: KindDMRelayList, CreatedAt: nostr.Timestamp(u.clock.Now().Unix()), Tags: tags}
	if err := u.key.Sign(evt); err != nil {
		t.Fatal(err)
	}
	publishTo(t, on, u.key, evt)
}

func publishTo(t testing.TB, url string, k *identity.Key, evt *nostr.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := nostrclient.Dial(ctx, url, nostrclient.Options{Sign: func(e *nostr.Event) error { return k.Sign(e) }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Publish(ctx, evt); err != nil {
		t.Fatal(err)
	}
}

func (u *user) start(t testing.TB, mutate func(*Config)) *Service {
	t.Helper()
	cfg := Config{
		Key: u.key, RelayURL: u.relay.url, DBPath: u.db, Logger: testLogger(t).With("user", u.name),
		Now: u.clock.Now, RetryBase: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond,
		ReconnectDelay: 50 * time.Millisecond, PurgeInterval: time.Hour,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	u.svc = svc
	t.Cleanup(func() { _ = svc.Close() })
	return svc
}

// eventually is testutil.Eventually.
func eventually(t testing.TB, d time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	testutil.Eventually(t, d, what, cond)
}

// hasMessage reports whether svc's conversation holds a message with this text.
func findMessage(ctx context.Context, svc *Service, conv, text string) (*Message, error) {
	ms, err := svc.History(ctx, conv, HistoryOptions{})
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if m.Content == text {
			return m, nil
		}
	}
	return nil, errors.New("not there yet")
}
