package chat

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/internal/relaytest"
	"github.com/nbd-wtf/go-nostr"
)

// Two users, each with their own relay (owner = that user), exchange text,
// a file through a real blob store, an expiring message and a deletion.
func TestTwoUsersExchange(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	alice := newUser(t, clk, "alice")
	bob := newUser(t, clk, "bob")
	alice.publishDMRelays(t, alice.relay.url, alice.relay.url)
	bob.publishDMRelays(t, bob.relay.url, bob.relay.url)

	blobs, err := NewBlobStore(BlobConfig{Dir: t.TempDir(), Owner: alice.key.PublicKey(), Now: clk.Now, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	blobSrv := httptest.NewServer(http.StripPrefix("/blobs", blobs))
	defer blobSrv.Close()
	blobs.cfg.PublicURL = blobSrv.URL + "/blobs" // the node sets it from its listen address

	as := alice.start(t, func(c *Config) {
		c.DiscoveryRelays = []string{bob.relay.url}
		c.BlobURL = blobSrv.URL + "/blobs"
	})
	bs := bob.start(t, func(c *Config) {
		c.DiscoveryRelays = []string{alice.relay.url}
		c.AllowPrivateFileHosts = true // alice's blob store is on loopback
	})
	bobNpub := bob.key.Npub()
	watch := bs.Watch(ctx)

	// Text, both ways.
	m, err := as.Send(ctx, []string{bobNpub}, "hello bob", SendOptions{Subject: "plans"})
	if err != nil {
		t.Fatal(err)
	}
	if m.State != StateQueued {
		t.Fatalf("new message state %s, want queued", m.State)
	}
	sent, err := as.WaitSent(ctxT(t, 10*time.Second), m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if sent.State != StateSent || sent.Status() != "sent to 1 of 1 relays" {
		t.Fatalf("state %s / %q", sent.State, sent.Status())
	}
	select {
	case ev := <-watch:
		if ev.Type != EventMessage || ev.Message == nil || ev.Message.Content != "hello bob" || ev.Message.Sender != alice.key.PublicKey() {
			t.Fatalf("watch event %+v", ev)
		}
		if ev.Conversation != m.Conversation {
			t.Fatalf("bob files it in %s, alice in %s", ev.Conversation, m.Conversation)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("bob did not receive the message")
	}
	conv := m.Conversation
	if _, err := bs.Send(ctx, []string{alice.key.PublicKey()}, "hi alice", SendOptions{ReplyTo: m.ID}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "alice gets bob's reply", func() (bool, error) {
		_, err := findMessage(ctx, as, conv, "hi alice")
		return err == nil, err
	})
	// Alice's own copy came back through her relay and was deduplicated.
	hist, err := as.History(ctx, conv, HistoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || hist[0].Content != "hello bob" || !hist[0].Outgoing || hist[1].Outgoing {
		t.Fatalf("alice's history: %+v", hist)
	}

	// Unread counts and mark read.
	convs, err := bs.Conversations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(convs) != 1 || convs[0].Unread != 1 || convs[0].Subject != "plans" || len(convs[0].Peers) != 1 || convs[0].Peers[0].PubKey != alice.key.PublicKey() {
		t.Fatalf("bob's conversations: %+v", convs[0])
	}
	if got := convs[0].Peers[0].Status(); got != IdentityKeyOnly {
		t.Fatalf("identity status %q", got)
	}
	if err := bs.MarkRead(ctx, conv); err != nil {
		t.Fatal(err)
	}
	convs, _ = bs.Conversations(ctx)
	if convs[0].Unread != 0 {
		t.Fatalf("unread after MarkRead: %d", convs[0].Unread)
	}

	// A file through the blob store over HTTP.
	data := make([]byte, 100_000)
	_, _ = rand.Read(data)
	fm, err := as.SendFile(ctx, []string{bobNpub}, bytes.NewReader(data), FileOptions{Name: "photo.jpg", Type: "image/jpeg"}, SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if fm.Kind != KindFileMessage || fm.File == nil || fm.File.Type != "image/jpeg" || !strings.HasPrefix(fm.Content, blobSrv.URL+"/blobs/") {
		t.Fatalf("file message %+v", fm)
	}
	var got *Message
	eventually(t, 10*time.Second, "bob gets the file message", func() (bool, error) {
		got, err = bs.Message(ctx, fm.ID)
		return err == nil, err
	})
	plain, err := bs.FetchFile(ctx, got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(plain, data) {
		t.Fatal("bob's decrypted file differs")
	}
	blobFile := filepath.Join(blobs.cfg.Dir, got.File.SHA256)
	if fi, err := os.Stat(blobFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("blob file: %v %v", fi, err)
	}
	if raw, _ := os.ReadFile(blobFile); bytes.Contains(raw, data[:64]) {
		t.Fatal("blob store holds plaintext")
	}

	// Disappearing messages: a 60 s timer on the conversation.
	if _, err := as.SetDisappearing(ctx, []string{bobNpub}, time.Minute); err != nil {
		t.Fatal(err)
	}
	em, err := as.Send(ctx, []string{bobNpub}, "this will self-destruct", SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if em.ExpiresAt.IsZero() {
		t.Fatal("no expiration on a message in a disappearing conversation")
	}
	eventually(t, 10*time.Second, "bob gets the expiring message", func() (bool, error) {
		m, err := findMessage(ctx, bs, conv, "this will self-destruct")
		return err == nil && !m.ExpiresAt.IsZero(), err
	})
	beforeBob := len(bob.relay.wraps(t, bob.key.PublicKey()))
	var expWraps int
	for _, w := range bob.relay.wraps(t, bob.key.PublicKey()) {
		if Expiration(w) > 0 {
			expWraps++
		}
	}
	if expWraps != 1 {
		t.Fatalf("bob's relay holds %d expiring wraps, want 1", expWraps)
	}
	clk.Add(2 * time.Minute)
	// Gone from the conversation at once, before any purge runs.
	for _, s := range []*Service{as, bs} {
		hist, err := s.History(ctx, conv, HistoryOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range hist {
			if m.Content == "this will self-destruct" {
				t.Fatal("an expired message is still shown in the history before the purge")
			}
		}
	}
	for _, s := range []*Service{as, bs} {
		if n, err := s.PurgeExpired(ctx); err != nil || n != 1 {
			t.Fatalf("purge: %d %v", n, err)
		}
		if _, err := findMessage(ctx, s, conv, "this will self-destruct"); err == nil {
			t.Fatal("expired message still in a store")
		}
	}
	if after := len(bob.relay.wraps(t, bob.key.PublicKey())); after != beforeBob-1 {
		t.Fatalf("bob's relay serves %d wraps after expiry, want %d", after, beforeBob-1)
	}
	if _, err := as.SetDisappearing(ctx, []string{bobNpub}, 0); err != nil {
		t.Fatal(err)
	}

	// Deletion.
	dm, err := as.Send(ctx, []string{bobNpub}, "oops, wrong chat", SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "bob gets the message to delete", func() (bool, error) {
		_, err := bs.Message(ctx, dm.ID)
		return err == nil, err
	})
	if err := bs.Delete(ctx, dm.ID); err == nil {
		t.Fatal("bob deleted alice's message")
	}
	if err := as.Delete(ctx, dm.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "bob removes the deleted message", func() (bool, error) {
		_, err := bs.Message(ctx, dm.ID)
		return err != nil, err
	})
	if _, err := as.Message(ctx, dm.ID); err == nil {
		t.Fatal("deleted message still in alice's store")
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// A group of three: a room is the set of p tags plus the sender.
func TestGroupConversation(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	a, b, c := newUser(t, clk, "a"), newUser(t, clk, "b"), newUser(t, clk, "c")
	for _, u := range []*user{a, b, c} {
		u.publishDMRelays(t, u.relay.url, u.relay.url)
	}
	disc := []string{a.relay.url, b.relay.url, c.relay.url}
	as := a.start(t, func(cfg *Config) { cfg.DiscoveryRelays = disc })
	bs := b.start(t, func(cfg *Config) { cfg.DiscoveryRelays = disc })
	cs := c.start(t, func(cfg *Config) { cfg.DiscoveryRelays = disc })
	m, err := as.Send(ctx, []string{b.key.PublicKey(), c.key.Npub()}, "hello both", SendOptions{Subject: "trio"})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*Service{bs, cs} {
		eventually(t, 10*time.Second, "group message", func() (bool, error) {
			got, err := s.Message(ctx, m.ID)
			return err == nil && got.Conversation == m.Conversation, err
		})
	}
	// c answers the room: it lands in the same conversation for a and b.
	r, err := cs.Send(ctx, []string{a.key.PublicKey(), b.key.PublicKey()}, "hi from c", SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Conversation != m.Conversation {
		t.Fatal("reply in a different room")
	}
	for _, s := range []*Service{as, bs} {
		eventually(t, 10*time.Second, "group reply", func() (bool, error) {
			_, err := findMessage(ctx, s, m.Conversation, "hi from c")
			return err == nil, err
		})
	}
	if sent, _ := as.WaitSent(ctxT(t, 10*time.Second), m.ID); sent.Status() != "sent to 2 of 2 relays" {
		t.Fatalf("group status %q", sent.Status())
	}
	// a 1:1 with b is another room.
	d, err := as.Send(ctx, []string{b.key.PublicKey()}, "just you", SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Conversation == m.Conversation {
		t.Fatal("1:1 shares the group's room")
	}
}

// One of the recipient's two DM relays is down: the message is sent through
// the other and delivered to the second when it comes back. Then both are
// down and the sender's service is stopped mid-send and restarted on the
// same SQLite file: the outbox delivers afterwards.
func TestRelayOutageAndRestart(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	alice := newUser(t, clk, "alice")
	bob := newUser(t, clk, "bob")
	bob2 := startRelay(t, clk, bob.key.PublicKey())
	bob.publishDMRelays(t, bob.relay.url, bob.relay.url, bob2.url)
	alice.publishDMRelays(t, alice.relay.url, alice.relay.url)

	as := alice.start(t, func(c *Config) {
		c.DiscoveryRelays = []string{bob.relay.url}
		c.AllowPrivateRelays = true // bob's second relay, on loopback, is only in his list
	})
	bs := bob.start(t, nil)
	if got := bs.inboxRelays(ctx); len(got) != 2 {
		t.Fatalf("bob's inbox relays %v", got)
	}

	bob2.stop()
	m, err := as.Send(ctx, []string{bob.key.PublicKey()}, "one relay down", SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sent, err := as.WaitSent(ctxT(t, 10*time.Second), m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if sent.Status() != "sent to 1 of 2 relays" {
		t.Fatalf("status %q", sent.Status())
	}
	eventually(t, 10*time.Second, "bob receives through the live relay", func() (bool, error) {
		_, err := bs.Message(ctx, m.ID)
		return err == nil, err
	})
	if n := len(bob2.wraps(t, bob.key.PublicKey())); n != 0 {
		t.Fatalf("stopped relay has %d wraps", n)
	}
	bob2.start()
	eventually(t, 15*time.Second, "retry reaches the relay that came back", func() (bool, error) {
		m, err := as.Message(ctx, m.ID)
		return err == nil && m.Delivery.Acked == 2, err
	})
	if n := len(bob2.wraps(t, bob.key.PublicKey())); n != 1 {
		t.Fatalf("relay that came back holds %d wraps, want 1", n)
	}

	// Both of bob's relays down; alice sends, then stops mid-send.
	bob.relay.stop()
	bob2.stop()
	m2, err := as.Send(ctx, []string{bob.key.PublicKey()}, "sent during the outage", SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // a few failed attempts
	if got, _ := as.Message(ctx, m2.ID); got.State != StateQueued {
		t.Fatalf("state during outage %s", got.State)
	}
	if err := as.Close(); err != nil {
		t.Fatal(err)
	}
	bob.relay.start()
	bob2.start()
	as2 := alice.start(t, func(c *Config) { c.AllowPrivateRelays = true })
	got, err := as2.WaitSent(ctxT(t, 15*time.Second), m2.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != StateSent {
		t.Fatalf("after restart: %s", got.Status())
	}
	eventually(t, 15*time.Second, "bob receives after the outage", func() (bool, error) {
		_, err := bs.Message(ctx, m2.ID)
		return err == nil, err
	})
	eventually(t, 15*time.Second, "both relays get it", func() (bool, error) {
		m, err := as2.Message(ctx, m2.ID)
		return err == nil && m.Delivery.Acked == 2, err
	})
	// Each message exactly once in bob's store, though it came from two relays.
	hist, _ := bs.History(ctx, m.Conversation, HistoryOptions{})
	if len(hist) != 2 {
		t.Fatalf("bob's history has %d messages, want 2", len(hist))
	}
}

// A relay refusing for good (restricted:) fails the message with the reason.
func TestPermanentFailure(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	alice := newUser(t, clk, "alice")
	bob := newUser(t, clk, "bob")
	// Bob lists alice's relay, which only takes wraps for alice.
	bob.publishDMRelays(t, bob.relay.url, alice.relay.url)
	as := alice.start(t, func(c *Config) { c.DiscoveryRelays = []string{bob.relay.url} })
	m, err := as.Send(ctx, []string{bob.key.PublicKey()}, "nowhere to go", SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := as.WaitSent(ctxT(t, 10*time.Second), m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != StateFailed || !strings.Contains(got.Status(), "restricted") {
		t.Fatalf("status %q", got.Status())
	}
}

// A relay's reason may hold commas: each failed relay's reason comes back
// whole. (They were stored joined by commas and split on them, so
// "blocked: spam, go away" came back as two errors.)
func TestFailureReasonsKeepTheirCommas(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	alice := newUser(t, clk, "alice")
	bob, carol := newUser(t, clk, "bob"), newUser(t, clk, "carol")
	carol.publishDMRelays(t, carol.relay.url, carol.relay.url)
	refuse := func(reason string) string {
		return relaytest.Scripted(t, func(env nostr.Envelope) []string {
			evt, ok := env.(*nostr.EventEnvelope)
			if !ok {
				return nil
			}
			r, _ := json.Marshal(reason)
			return []string{`["OK","` + evt.ID + `",false,` + string(r) + `]`}
		})
	}
	r1, r2 := refuse("blocked: spam, go away"), refuse("restricted: members only, sorry, really")
	bob.publishDMRelays(t, bob.relay.url, r1, r2)
	as := alice.start(t, func(c *Config) {
		c.DiscoveryRelays = []string{bob.relay.url, carol.relay.url}
		c.AllowPrivateRelays = true
	})
	m, err := as.Send(ctx, []string{bob.key.PublicKey()}, "nowhere to go", SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := as.WaitSent(ctxT(t, 10*time.Second), m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != StateFailed || len(got.Delivery.Errors) != 2 {
		t.Fatalf("state %s, errors %q, want failed with two", got.State, got.Delivery.Errors)
	}
	for _, want := range []string{"blocked: spam, go away", "restricted: members only, sorry, really"} {
		if !slices.ContainsFunc(got.Delivery.Errors, func(e string) bool { return strings.Contains(e, want) }) {
			t.Errorf("errors %q lack %q", got.Delivery.Errors, want)
		}
	}
	// A message that failed nowhere has no errors.
	sent, err := as.Send(ctx, []string{carol.key.PublicKey()}, "hi", SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := as.WaitSent(ctxT(t, 10*time.Second), sent.ID); err != nil || got.Delivery.Errors != nil {
		t.Fatalf("a delivered message: %v errors %q", err, got.Delivery.Errors)
	}
}

// Contacts: @handle via a kind 3780 claim, name@domain via NIP-05, with
// the identity status and the anchoring verdict hook.
func TestResolveContacts(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	alice := newUser(t, clk, "alice")
	bob := newUser(t, clk, "bob")
	claim, err := identity.NewClaim(bob.key, identity.ClaimParams{Handle: "bob", Relays: []string{bob.relay.url}})
	if err != nil {
		t.Fatal(err)
	}
	publishTo(t, bob.relay.url, bob.key, claim)

	nip05 := identity.NewNIP05Handler(testLogger(t))
	if err := nip05.Set("carol", bob.key.PublicKey(), []string{bob.relay.url}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(nip05)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	as := alice.start(t, func(c *Config) {
		c.DiscoveryRelays = []string{bob.relay.url}
		c.Resolver = &identity.Resolver{Scheme: "http", HostFor: func(string) string { return host }}
		c.Verdict = func(_ context.Context, pk, handle string) string {
			return fmt.Sprintf("anchored (%s)", handle)
		}
	})
	c, err := as.Resolve(ctx, "@bob")
	if err != nil {
		t.Fatal(err)
	}
	if c.PubKey != bob.key.PublicKey() || c.Handle != "bob" || c.Status() != "claimed; anchored (bob)" || c.Name() != "@bob" {
		t.Fatalf("contact %+v status %q", c, c.Status())
	}
	c, err = as.Resolve(ctx, "carol@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if c.PubKey != bob.key.PublicKey() || c.NIP05 != "carol@example.com" {
		t.Fatalf("nip05 contact %+v", c)
	}
	if _, err := as.Resolve(ctx, "@nobody"); err == nil {
		t.Fatal("resolved an unclaimed handle")
	}
	if _, err := as.Resolve(ctx, bob.key.PublicKey()); err != nil {
		t.Fatal(err)
	}
	if _, err := as.Resolve(ctx, "nsec1qqqq"); err == nil {
		t.Fatal("accepted an nsec as a contact")
	}
}

// Files of the message store and logs: 0600, and no plaintext in logs.
func TestStoreModeAndMigrations(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "chat.db")
	st, err := openStore(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	var v int
	if err := st.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil || v != len(migrations) {
		t.Fatalf("version %d %v", v, err)
	}
	var mode string
	_ = st.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode)
	if mode != "wal" {
		t.Fatalf("journal mode %s", mode)
	}
	_ = st.close()
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v", fi.Mode(), err)
	}
	// Re-open: idempotent; a newer schema is refused.
	st, err = openStore(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = st.db.ExecContext(ctx, "PRAGMA user_version=99")
	_ = st.close()
	if _, err := openStore(ctx, p); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("newer schema: %v", err)
	}
}

// Close while Start is still looking up our DM relay list (here on a relay
// that never answers): Start then starts nothing and says so. It used to
// start the loops after Close had waited for them, on a closed store.
func TestCloseWhileStarting(t *testing.T) {
	stalled, _ := silentRelay(t)
	svc, err := New(Config{Key: newKey(t), RelayURL: stalled, DBPath: filepath.Join(t.TempDir(), "chat.db"), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() { started <- svc.Start(context.Background()) }()
	time.Sleep(200 * time.Millisecond)
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-started:
		if err == nil || !strings.Contains(err.Error(), "closed") {
			t.Fatalf("Start after Close: %v, want an error", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Start did not return")
	}
}
