package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/relay"
	"github.com/anchorchat/anchorchat/storage"
)

// clock is a settable time source shared by a test's relay and store.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type keypair struct{ sk, pk string }

func newKey(t testing.TB) keypair {
	t.Helper()
	sk := nostr.GeneratePrivateKey()
	pk, err := nostr.GetPublicKey(sk)
	if err != nil {
		t.Fatal(err)
	}
	return keypair{sk, pk}
}

// env is a relay on a real SQLite file behind a real TCP listener.
type env struct {
	t     testing.TB
	store *storage.Store
	relay *relay.Relay
	srv   *httptest.Server
	url   string
	owner keypair
	clock *clock
}

func newEnv(t testing.TB, mutate func(*relay.Config)) *env {
	t.Helper()
	e := &env{t: t, owner: newKey(t), clock: &clock{now: time.Now()}}
	st, err := storage.Open(context.Background(), storage.Options{
		Path: filepath.Join(t.TempDir(), "events.db"), Synchronous: "NORMAL", Now: e.clock.Now,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := relay.DefaultConfig()
	cfg.Owner = e.owner.pk
	// Tests publish fast; the rate-limit tests set their own limits.
	cfg.Limits.EventsPerSecondPerIP, cfg.Limits.EventsPerSecondPerPubkey, cfg.Limits.ReqsPerSecondPerIP = 0, 0, 0
	if mutate != nil {
		mutate(&cfg)
	}
	e.store = st
	e.relay = relay.New(cfg, st, nil, nil)
	e.relay.Now = e.clock.Now
	e.relay.SweepInterval = 0
	e.relay.Start()
	e.srv = httptest.NewServer(e.relay)
	e.url = "ws" + strings.TrimPrefix(e.srv.URL, "http")
	t.Cleanup(func() {
		e.srv.CloseClientConnections()
		e.relay.Close()
		e.srv.Close()
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	return e
}

// event makes a signed event by k dated now (on the env clock).
func (e *env) event(k keypair, kind int, content string, tags ...nostr.Tag) *nostr.Event {
	e.t.Helper()
	evt := &nostr.Event{Kind: kind, Content: content, Tags: nostr.Tags(tags), CreatedAt: nostr.Timestamp(e.clock.Now().Unix())}
	if evt.Tags == nil {
		evt.Tags = nostr.Tags{}
	}
	if err := evt.Sign(k.sk); err != nil {
		e.t.Fatal(err)
	}
	return evt
}

// client is a raw websocket client that speaks frames, for exact assertions.
type client struct {
	t         testing.TB
	ws        *websocket.Conn
	challenge string
	url       string
	msgs      chan []json.RawMessage
	errc      chan error
}

func (e *env) dial() *client {
	e.t.Helper()
	return e.dialOpts(nil)
}

// dialOpts dials with websocket options (a Host header, say).
func (e *env) dialOpts(opts *websocket.DialOptions) *client {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, e.url, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	ws.SetReadLimit(64 << 20)
	c := &client{t: e.t, ws: ws, url: e.url, msgs: make(chan []json.RawMessage, 10000), errc: make(chan error, 1)}
	go func() {
		for {
			_, data, err := ws.Read(context.Background())
			if err != nil {
				c.errc <- err
				close(c.msgs)
				return
			}
			var msg []json.RawMessage
			if err := json.Unmarshal(data, &msg); err != nil {
				c.errc <- fmt.Errorf("relay sent bad JSON %q: %w", data, err)
				close(c.msgs)
				return
			}
			c.msgs <- msg
		}
	}()
	auth := c.expect("AUTH")
	c.challenge = str(c.t, auth[1])
	e.t.Cleanup(func() { ws.CloseNow() })
	return c
}

func (c *client) sendRaw(s string) {
	c.t.Helper()
	if err := c.ws.Write(context.Background(), websocket.MessageText, []byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) send(v ...any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	c.sendRaw(string(b))
}

// next returns the next message from the relay.
func (c *client) next() []json.RawMessage {
	c.t.Helper()
	select {
	case m, ok := <-c.msgs:
		if !ok {
			c.t.Fatalf("connection closed: %v", <-c.errc)
		}
		return m
	case <-time.After(5 * time.Second):
		c.t.Fatal("timed out waiting for a message from the relay")
	}
	return nil
}

// expect returns the next message, which must have the given verb.
func (c *client) expect(verb string) []json.RawMessage {
	c.t.Helper()
	m := c.next()
	if got := str(c.t, m[0]); got != verb {
		c.t.Fatalf("want %s, got %s", verb, joinRaw(m))
	}
	return m
}

// quiet asserts that the relay sends nothing for a moment.
func (c *client) quiet(d time.Duration) {
	c.t.Helper()
	select {
	case m, ok := <-c.msgs:
		if ok {
			c.t.Fatalf("expected silence, got %s", joinRaw(m))
		}
	case <-time.After(d):
	}
}

// publish sends an EVENT and returns the OK's accepted flag and message.
func (c *client) publish(evt *nostr.Event) (bool, string) {
	c.t.Helper()
	c.send("EVENT", evt)
	return c.ok(evt.ID)
}

func (c *client) ok(id string) (bool, string) {
	c.t.Helper()
	m := c.expect("OK")
	if got := str(c.t, m[1]); got != id {
		c.t.Fatalf("OK for %s, want %s", got, id)
	}
	var accepted bool
	if err := json.Unmarshal(m[2], &accepted); err != nil {
		c.t.Fatal(err)
	}
	return accepted, str(c.t, m[3])
}

// mustPublish publishes and fails the test unless the relay accepted.
func (c *client) mustPublish(evt *nostr.Event) {
	c.t.Helper()
	if ok, msg := c.publish(evt); !ok {
		c.t.Fatalf("event refused: %s", msg)
	}
}

// refused publishes and checks the relay refused with the given prefix.
func (c *client) refused(evt *nostr.Event, prefix string) string {
	c.t.Helper()
	ok, msg := c.publish(evt)
	if ok || !strings.HasPrefix(msg, prefix) {
		c.t.Fatalf("want refusal %q, got ok=%v %q", prefix, ok, msg)
	}
	return msg
}

// req subscribes and returns the ids of the stored events up to EOSE, in order.
func (c *client) req(sub string, filters ...any) []string {
	c.t.Helper()
	c.send(append([]any{"REQ", sub}, filters...)...)
	var ids []string
	for {
		m := c.next()
		switch str(c.t, m[0]) {
		case "EVENT":
			var evt nostr.Event
			if err := json.Unmarshal(m[2], &evt); err != nil {
				c.t.Fatal(err)
			}
			if ok, _ := evt.CheckSignature(); !ok || !evt.CheckID() {
				c.t.Fatalf("relay served a bad event %s", m[2])
			}
			ids = append(ids, evt.ID)
		case "EOSE":
			return ids
		default:
			c.t.Fatalf("unexpected during REQ: %s", joinRaw(m))
		}
	}
}

// closed sends a REQ (or COUNT) expected to be refused, and returns the CLOSED message.
func (c *client) closed(verb, sub string, filters ...any) string {
	c.t.Helper()
	c.send(append([]any{verb, sub}, filters...)...)
	for {
		m := c.next()
		switch str(c.t, m[0]) {
		case "AUTH":
			continue
		case "CLOSED":
			return str(c.t, m[2])
		default:
			c.t.Fatalf("want CLOSED, got %s", joinRaw(m))
		}
	}
}

// auth authenticates the connection as k.
func (c *client) auth(k keypair) {
	c.t.Helper()
	evt := &nostr.Event{Kind: 22242, CreatedAt: nostr.Now(), Tags: nostr.Tags{{"relay", c.url}, {"challenge", c.challenge}}}
	if err := evt.Sign(k.sk); err != nil {
		c.t.Fatal(err)
	}
	c.send("AUTH", evt)
	if ok, msg := c.ok(evt.ID); !ok {
		c.t.Fatalf("AUTH refused: %s", msg)
	}
}

func str(t testing.TB, raw json.RawMessage) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("not a string: %s", raw)
	}
	return s
}

func joinRaw(m []json.RawMessage) string {
	parts := make([]string, len(m))
	for i, p := range m {
		parts[i] = string(p)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func ids(evts ...*nostr.Event) []string {
	out := make([]string, len(evts))
	for i, e := range evts {
		out[i] = e.ID
	}
	return out
}

func (c *client) sendBinary(b []byte) {
	c.t.Helper()
	if err := c.ws.Write(context.Background(), websocket.MessageBinary, b); err != nil {
		c.t.Fatal(err)
	}
}

// saveAll stores evts straight in the relay's store, all in one go.
func (e *env) saveAll(evts []*nostr.Event) {
	e.t.Helper()
	done := make(chan error, len(evts))
	for _, evt := range evts {
		e.store.SaveAsync(evt, func(err error) { done <- err })
	}
	for range evts {
		if err := <-done; err != nil {
			e.t.Fatal(err)
		}
	}
}

// dialRaw dials a websocket that the test reads (or does not read) itself,
// frames of up to 1 MiB.
func (e *env) dialRaw(ctx context.Context) *websocket.Conn {
	e.t.Helper()
	ws, _, err := websocket.Dial(ctx, e.url, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	ws.SetReadLimit(1 << 20)
	e.t.Cleanup(func() { ws.CloseNow() })
	return ws
}

// writeJSON sends v as one JSON text frame on ws.
func writeJSON(t testing.TB, ctx context.Context, ws *websocket.Conn, v ...any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if err := ws.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatal(err)
	}
}

// heapInUse is the test process's heap in use after a full collection.
func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}
