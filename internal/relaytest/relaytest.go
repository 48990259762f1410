// Package relaytest runs a real anchorchat relay for tests: package relay on
// a real SQLite file (package storage) behind a real loopback listener, with
// the rate limits lifted. It can be taken off the network and brought back on
// the same address and store, to test outages.
package relaytest

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anchorchat/anchorchat/relay"
	"github.com/anchorchat/anchorchat/storage"
	"github.com/coder/websocket"
	"github.com/nbd-wtf/go-nostr"
)

// Options configure a test relay.
type Options struct {
	Owner string   // hex pubkey of the relay's owner
	Allow []string // more pubkeys that may publish like the owner
	Open  bool     // accept events from anyone
	// Now is the clock of the relay and its store (default time.Now).
	Now func() time.Time
	// MaxLimit, when set, caps the events of one answer (relay.Limits
	// MaxLimit, published in NIP-11 as max_limit; default 1,000).
	MaxLimit int
}

// Relay is a running test relay.
type Relay struct {
	URL   string // ws://127.0.0.1:port
	Addr  string // 127.0.0.1:port
	Store *storage.Store

	t   testing.TB
	cfg relay.Config
	now func() time.Time

	mu    sync.Mutex
	relay *relay.Relay
	srv   *http.Server
}

// Start runs a relay until the test ends.
func Start(t testing.TB, o Options) *Relay {
	t.Helper()
	if o.Now == nil {
		o.Now = time.Now
	}
	st, err := storage.Open(context.Background(), storage.Options{
		Path: filepath.Join(t.TempDir(), "events.db"), Synchronous: "NORMAL", Now: o.Now,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := relay.DefaultConfig()
	cfg.Owner, cfg.Allow, cfg.Open = o.Owner, o.Allow, o.Open
	l := &cfg.Limits
	l.EventsPerSecondPerIP, l.EventsPerSecondPerPubkey, l.ReqsPerSecondPerIP, l.MaxConnectionsPerIP = 0, 0, 0, 0
	if o.MaxLimit > 0 {
		l.MaxLimit, l.DefaultLimit = o.MaxLimit, min(l.DefaultLimit, o.MaxLimit)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{Addr: ln.Addr().String(), Store: st, t: t, cfg: cfg, now: o.Now}
	r.URL = "ws://" + r.Addr
	r.serve(ln)
	t.Cleanup(func() {
		r.Stop()
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	return r
}

func (r *Relay) serve(ln net.Listener) {
	rl := relay.New(r.cfg, r.Store, slog.New(slog.DiscardHandler), nil)
	rl.Now = r.now
	rl.SweepInterval = 0
	rl.Start()
	srv := &http.Server{Handler: rl}
	go func() { _ = srv.Serve(ln) }()
	r.mu.Lock()
	r.relay, r.srv = rl, srv
	r.mu.Unlock()
}

// Stop takes the relay off the network: the listener closes and every
// websocket is dropped. The store stays.
func (r *Relay) Stop() {
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

// Restart brings a stopped relay back on the same address and store.
func (r *Relay) Restart() {
	r.t.Helper()
	var ln net.Listener
	var err error
	for range 100 { // the port may linger for a moment after Stop
		if ln, err = net.Listen("tcp", r.Addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatal(err)
	}
	r.serve(ln)
}

// Scripted runs a websocket server that only pretends to be a relay, for
// tests of clients facing odd or hostile ones: it sends greet on each
// connection, then answers every message the client sends with the frames
// answer returns for it (nil for messages that are not valid envelopes).
// It returns the ws:// URL; the server stops when the test ends.
func Scripted(t testing.TB, answer func(env nostr.Envelope) []string, greet ...string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		ctx := r.Context()
		send := func(frames []string) bool {
			for _, f := range frames {
				if ws.Write(ctx, websocket.MessageText, []byte(f)) != nil {
					return false
				}
			}
			return true
		}
		if !send(greet) {
			return
		}
		for {
			_, data, err := ws.Read(ctx)
			if err != nil {
				return
			}
			if !send(answer(nostr.ParseMessage(string(data)))) {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}
