package payments

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/chat"
	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/relay"
	"github.com/anchorchat/anchorchat/storage"
)

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("PAYMENTS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// testRelay is a real relay on a real SQLite file behind a TCP listener
// that can be stopped and started again on the same address (the pattern
// of chat's tests).
type testRelay struct {
	t     testing.TB
	cfg   relay.Config
	store *storage.Store
	addr  string
	url   string

	mu    sync.Mutex
	relay *relay.Relay
	srv   *http.Server
}

func startRelay(t testing.TB, owner string, allow ...string) *testRelay {
	t.Helper()
	st, err := storage.Open(context.Background(), storage.Options{
		Path: filepath.Join(t.TempDir(), "events.db"), Synchronous: "NORMAL", Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := relay.DefaultConfig()
	cfg.Owner = owner
	cfg.Allow = allow
	cfg.Limits.EventsPerSecondPerIP, cfg.Limits.EventsPerSecondPerPubkey, cfg.Limits.ReqsPerSecondPerIP = 0, 0, 0
	cfg.Limits.MaxConnectionsPerIP = 0
	r := &testRelay{t: t, cfg: cfg, store: st}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	r.url = "ws://" + r.addr
	r.serve(ln)
	t.Cleanup(func() {
		r.stop()
		_ = st.Close()
	})
	return r
}

func (r *testRelay) serve(ln net.Listener) {
	rl := relay.New(r.cfg, r.store, slog.New(slog.DiscardHandler), nil)
	rl.SweepInterval = 0
	rl.Start()
	srv := &http.Server{Handler: rl}
	go func() { _ = srv.Serve(ln) }()
	r.mu.Lock()
	r.relay, r.srv = rl, srv
	r.mu.Unlock()
}

func (r *testRelay) stop() {
	r.mu.Lock()
	rl, srv := r.relay, r.srv
	r.relay, r.srv = nil, nil
	r.mu.Unlock()
	if srv == nil {
		return
	}
	_ = srv.Close()
	rl.Close()
}

func (r *testRelay) start() {
	r.t.Helper()
	var ln net.Listener
	var err error
	for range 100 {
		if ln, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatal(err)
	}
	r.serve(ln)
}

// save stores a signed event directly (claims and kind 10050 lists).
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

func eventually(t testing.TB, d time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(d)
	var last error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s (last: %v)", what, last)
}
