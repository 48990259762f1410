package chat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// TestInboxCatchUpReadsEveryPage: bob is offline while 1,150 wraps reach
// his relay, more than the relay answers one REQ with (500). After his
// restart every message is there. The wraps share four seconds (300, 500,
// 300 and 50 of them), so pages are cut in the middle of a second, and the
// second of 500 fills a page with wraps already read: a pager that skips
// below a page's oldest second, or stops at a page with nothing new, loses
// some.
func TestInboxCatchUpReadsEveryPage(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	bob := newUser(t, clk, "bob")
	bs := bob.start(t, nil)
	eventually(t, 10*time.Second, "bob's inbox to have subscribed (its cursor set)", func() (bool, error) {
		var n int
		err := bs.st.db.QueryRowContext(ctx, `SELECT count(*) FROM cursors`).Scan(&n)
		return n > 0, err
	})
	if err := bs.Close(); err != nil {
		t.Fatal(err)
	}

	alice := wrapper(t)
	now := clk.Now()
	total := 0
	for i, n := range []int{300, 500, 300, 50} {
		at := nostr.Timestamp(now.Add(-time.Duration(i+1) * time.Hour).Unix())
		alice.past = func(time.Time) nostr.Timestamp { return at }
		for j := range n {
			r := alice.NewRumor(KindChatMessage, fmt.Sprint("msg ", i, " ", j), nostr.Tags{{"p", bob.key.PublicKey()}}, now)
			w, err := alice.Wrap(r, bob.key.PublicKey(), 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := bob.relay.store.Save(ctx, &w); err != nil {
				t.Fatal(err)
			}
			total++
		}
	}

	bs2 := bob.start(t, nil)
	eventually(t, 30*time.Second, "every message sent while bob was offline", func() (bool, error) {
		var got int
		if err := bs2.st.db.QueryRowContext(ctx, `SELECT count(*) FROM messages`).Scan(&got); err != nil {
			return false, err
		}
		return got == total, fmt.Errorf("%d of %d", got, total)
	})
}

// TestWrapExpirationMakesMessageDisappear: NIP-17 puts a disappearing
// message's expiration on the gift wrap, so a rumor without one (as
// nostr-tools and other clients send) still disappears; with both, the
// earlier counts. Before, only the rumor's was stored and such a message
// was kept for good.
func TestWrapExpirationMakesMessageDisappear(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	bob := newUser(t, clk, "bob")
	bs := bob.start(t, nil)
	alice := wrapper(t)
	now := clk.Now()
	hour := now.Add(time.Hour).Unix()
	for _, c := range []struct {
		name           string
		rumorExp, want int64
	}{
		{"wrap only", 0, hour},
		{"rumor earlier", now.Add(30 * time.Minute).Unix(), now.Add(30 * time.Minute).Unix()},
		{"wrap earlier", now.Add(2 * time.Hour).Unix(), hour},
	} {
		tags := nostr.Tags{{"p", bob.key.PublicKey()}}
		if c.rumorExp > 0 {
			tags = append(tags, expirationTag(c.rumorExp))
		}
		r := alice.NewRumor(KindChatMessage, c.name, tags, now)
		w, err := alice.Wrap(r, bob.key.PublicKey(), hour) // on the seal and the wrap
		if err != nil {
			t.Fatal(err)
		}
		if err := bs.Ingest(ctx, &w); err != nil {
			t.Fatal(err)
		}
		m, err := bs.Message(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if m.ExpiresAt.Unix() != c.want {
			t.Errorf("%s: stored to expire at %v, want %d", c.name, m.ExpiresAt, c.want)
		}
	}
	clk.Add(2*time.Hour + time.Minute)
	if n, err := bs.PurgeExpired(ctx); err != nil || n != 3 {
		t.Fatalf("purged %d messages (%v), want 3", n, err)
	}
}

// TestSubjectGoesWithItsMessage: a conversation's subject is the newest one
// its messages carry, whatever order they arrive in. When the message that
// set it expires, the subject falls back to the one before; when the others
// are deleted by their sender, the conversation has none. Before, the
// subject of a disappeared message stayed in the store and in
// Conversations, and the last message to arrive set it.
func TestSubjectGoesWithItsMessage(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	bob := newUser(t, clk, "bob")
	bs := bob.start(t, nil)
	alice := wrapper(t)
	now := clk.Now()
	ingest := func(r nostr.Event) { t.Helper(); wrapAndIngest(t, alice, bs, bob.key.PublicKey(), r) }
	subject := func(want string) {
		t.Helper()
		cs, err := bs.Conversations(ctx)
		if err != nil || len(cs) != 1 {
			t.Fatalf("conversations %v (%v)", cs, err)
		}
		if cs[0].Subject != want {
			t.Fatalf("subject %q, want %q", cs[0].Subject, want)
		}
	}
	p := nostr.Tag{"p", bob.key.PublicKey()}
	first := alice.NewRumor(KindChatMessage, "hi", nostr.Tags{p, {"subject", "lunch"}}, now.Add(-time.Minute))
	ingest(first)
	ingest(alice.NewRumor(KindChatMessage, "see you", nostr.Tags{p, {"subject", "secret meeting at 5"},
		expirationTag(now.Add(time.Hour).Unix())}, now))
	ingest(alice.NewRumor(KindChatMessage, "no subject here", nostr.Tags{p}, now))
	subject("secret meeting at 5")
	// An older message arriving last (as in a catch-up) does not take over.
	old := alice.NewRumor(KindChatMessage, "long ago", nostr.Tags{p, {"subject", "old news"}}, now.Add(-time.Hour))
	ingest(old)
	subject("secret meeting at 5")

	clk.Add(2 * time.Hour)
	if n, err := bs.PurgeExpired(ctx); err != nil || n != 1 {
		t.Fatalf("purged %d (%v)", n, err)
	}
	subject("lunch")

	ingest(alice.NewRumor(KindDeletion, "", nostr.Tags{p, {"e", first.ID}}, clk.Now()))
	if _, err := bs.Message(ctx, first.ID); err == nil {
		t.Fatal("deleted message still stored")
	}
	subject("old news")
	ingest(alice.NewRumor(KindDeletion, "", nostr.Tags{p, {"e", old.ID}}, clk.Now()))
	subject("")
}

// TestRemovedMessagesLeaveNoTrace: once a message has disappeared or been
// deleted by its sender, its text is in neither chat.db nor its WAL, while
// the node runs: a copy of the files made then does not give it back.
// Before, SQLite left the deleted rows in free pages and old WAL frames.
func TestRemovedMessagesLeaveNoTrace(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	bob := newUser(t, clk, "bob")
	bs := bob.start(t, nil)
	alice := wrapper(t)
	p := nostr.Tag{"p", bob.key.PublicKey()}
	ingest := func(r nostr.Event) { t.Helper(); wrapAndIngest(t, alice, bs, bob.key.PublicKey(), r) }
	onDisk := func(secret string) bool {
		t.Helper()
		for _, f := range []string{bob.db, bob.db + "-wal"} {
			b, err := os.ReadFile(f)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			if bytes.Contains(b, []byte(secret)) {
				return true
			}
		}
		return false
	}
	const expiring, deleted = "the-disappearing-secret-8c1f4e", "the-deleted-secret-5d20a7"
	ingest(alice.NewRumor(KindChatMessage, expiring, nostr.Tags{p, expirationTag(clk.Now().Add(time.Hour).Unix())}, clk.Now()))
	gone := alice.NewRumor(KindChatMessage, deleted, nostr.Tags{p}, clk.Now())
	ingest(gone)
	ingest(alice.NewRumor(KindChatMessage, "filler so the pages stay in use", nostr.Tags{p}, clk.Now()))
	if !onDisk(expiring) || !onDisk(deleted) {
		t.Fatal("the messages are not on disk in the clear; this test would prove nothing")
	}

	clk.Add(2 * time.Hour)
	if n, err := bs.PurgeExpired(ctx); err != nil || n != 1 {
		t.Fatalf("purged %d (%v)", n, err)
	}
	if onDisk(expiring) {
		t.Error("the text of a disappeared message is still in chat.db or its WAL")
	}
	ingest(alice.NewRumor(KindDeletion, "", nostr.Tags{p, {"e", gone.ID}}, clk.Now()))
	if onDisk(deleted) {
		t.Error("the text of a message its sender deleted is still in chat.db or its WAL")
	}
}

// TestRemovedFileMessageTakesItsBlob: the blob of a file message alice sent
// leaves her blob store when the message disappears, and when she deletes
// it; a deletion that fails is tried again at the next purge. Before, the
// encrypted blob stayed served at its URL for good.
func TestRemovedFileMessageTakesItsBlob(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	alice := newUser(t, clk, "alice")
	bob := newUser(t, clk, "bob")
	bob.publishDMRelays(t, bob.relay.url, bob.relay.url)
	blobs, err := NewBlobStore(BlobConfig{Dir: t.TempDir(), Owner: alice.key.PublicKey(), Now: clk.Now, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.StripPrefix("/blobs", blobs))
	defer srv.Close()
	blobs.cfg.PublicURL = srv.URL + "/blobs"
	var failing atomic.Bool
	as := alice.start(t, func(c *Config) {
		c.DiscoveryRelays = []string{bob.relay.url}
		c.BlobURL = srv.URL + "/blobs"
		c.DeleteBlob = func(sha string) error {
			if failing.Load() {
				return errors.New("disk on fire")
			}
			return blobs.Delete(sha)
		}
	})
	served := func(m *Message) bool {
		t.Helper()
		resp, err := http.Get(m.Content)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	send := func(opts SendOptions) *Message {
		t.Helper()
		m, err := as.SendFile(ctx, []string{bob.key.Npub()}, strings.NewReader("a photo"), FileOptions{Name: "p.jpg"}, opts)
		if err != nil {
			t.Fatal(err)
		}
		if !served(m) {
			t.Fatal("blob not served after sending")
		}
		return m
	}
	expiring := send(SendOptions{Expire: time.Hour})
	deleted := send(SendOptions{})
	kept := send(SendOptions{})

	failing.Store(true)
	clk.Add(2 * time.Hour)
	if n, err := as.PurgeExpired(ctx); err != nil || n != 1 {
		t.Fatalf("purged %d (%v)", n, err)
	}
	if !served(expiring) {
		t.Fatal("the blob went although its deletion failed")
	}
	failing.Store(false)
	if _, err := as.PurgeExpired(ctx); err != nil {
		t.Fatal(err)
	}
	if served(expiring) {
		t.Error("the blob of a disappeared file message is still served")
	}
	if err := as.Delete(ctx, deleted.ID); err != nil {
		t.Fatal(err)
	}
	var wraps int
	if err := as.st.db.QueryRowContext(ctx, `SELECT count(*) FROM deliveries WHERE rumor_id = ?`, deleted.ID).Scan(&wraps); err != nil || wraps != 0 {
		t.Errorf("%d wraps of the deleted message still kept (%v); our own copy opens with our key", wraps, err)
	}
	if served(deleted) {
		t.Error("the blob of a deleted file message is still served")
	}
	if !served(kept) {
		t.Error("the blob of a file message still there was deleted")
	}
}

// wrapAndIngest wraps rumor from `from` to recipient (with the rumor's
// expiration on the seal and wrap) and hands it to svc as if a relay had.
func wrapAndIngest(t *testing.T, from *Wrapper, svc *Service, recipient string, rumor nostr.Event) {
	t.Helper()
	w, err := from.Wrap(rumor, recipient, Expiration(&rumor))
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Ingest(context.Background(), &w); err != nil {
		t.Fatal(err)
	}
}

// TestReceivedRumorBounds: a rumor is the sender's word. One dated far in
// the future is stored as received now (it sorted first in its
// conversation for as long as its date was ahead); one within MaxFutureSkew
// keeps its time. A rumor naming more than MaxParticipants (author and p
// tags) is dropped and its wrap remembered; one at the limit is stored.
// Send refuses to make such a room.
func TestReceivedRumorBounds(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	bob := newUser(t, clk, "bob")
	bs := bob.start(t, nil)
	alice := wrapper(t)
	p := nostr.Tag{"p", bob.key.PublicKey()}
	now := clk.Now()

	future := alice.NewRumor(KindChatMessage, "from the future", nostr.Tags{p}, now.Add(24*time.Hour))
	wrapAndIngest(t, alice, bs, bob.key.PublicKey(), future)
	m, err := bs.Message(ctx, future.ID)
	if err != nil {
		t.Fatal(err)
	}
	if m.CreatedAt.After(clk.Now()) || m.CreatedAt.Before(now.Add(-time.Second)) {
		t.Fatalf("a rumor dated %v ahead is stored at %v, want the time it arrived (%v)", 24*time.Hour, m.CreatedAt, now)
	}
	cs, err := bs.Conversations(ctx)
	if err != nil || len(cs) != 1 || cs[0].LastAt.After(clk.Now()) {
		t.Fatalf("conversation last at %v (%v)", cs, err)
	}
	soon := alice.NewRumor(KindChatMessage, "clock a bit fast", nostr.Tags{p}, now.Add(MaxFutureSkew-time.Minute))
	wrapAndIngest(t, alice, bs, bob.key.PublicKey(), soon)
	if m, err := bs.Message(ctx, soon.ID); err != nil || m.CreatedAt.Unix() != int64(soon.CreatedAt) {
		t.Fatalf("a rumor within MaxFutureSkew: %+v (%v), want its own created_at", m, err)
	}

	group := func(n int) nostr.Tags {
		tags := nostr.Tags{p}
		for len(tags) < n {
			pk, _ := nostr.GetPublicKey(nostr.GeneratePrivateKey())
			tags = append(tags, nostr.Tag{"p", pk})
		}
		return tags
	}
	huge := alice.NewRumor(KindChatMessage, "to everyone", group(MaxParticipants), now)
	w, err := alice.Wrap(huge, bob.key.PublicKey(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := bs.Ingest(ctx, &w); !errors.Is(err, ErrTooManyParticipants) {
		t.Fatalf("a rumor with %d p tags: %v, want ErrTooManyParticipants", MaxParticipants, err)
	}
	if _, err := bs.Message(ctx, huge.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the dropped rumor was stored (%v)", err)
	}
	if seen, err := bs.st.seen(ctx, w.ID); err != nil || !seen {
		t.Fatalf("the dropped rumor's wrap is not remembered (%v)", err)
	}
	full := alice.NewRumor(KindChatMessage, "a full room", group(MaxParticipants-1), now)
	wrapAndIngest(t, alice, bs, bob.key.PublicKey(), full)
	if _, err := bs.Message(ctx, full.ID); err != nil {
		t.Fatalf("a room of exactly %d: %v", MaxParticipants, err)
	}

	var many []string // bob and MaxParticipants others
	for _, tag := range group(MaxParticipants + 1)[1:] {
		many = append(many, tag[1])
	}
	if _, err := bs.Send(ctx, many, "hi all", SendOptions{}); !errors.Is(err, ErrTooManyParticipants) {
		t.Fatalf("Send to %d recipients: %v, want ErrTooManyParticipants", len(many), err)
	}
}

// TestDeletionBeforeItsMessageLeavesNothing: a catch-up reads wraps newest
// first (and their dates are random), so the deletion of a message can
// arrive before the message. The message then stays deleted, and neither
// its subject nor an empty conversation made for it shows up. Before, the
// refused copy still named the conversation after the deleted message's
// subject (and created the conversation if there was none).
func TestDeletionBeforeItsMessageLeavesNothing(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	bob := newUser(t, clk, "bob")
	bs := bob.start(t, nil)
	alice := wrapper(t)
	p := nostr.Tag{"p", bob.key.PublicKey()}
	ingest := func(r nostr.Event) { t.Helper(); wrapAndIngest(t, alice, bs, bob.key.PublicKey(), r) }

	gone := alice.NewRumor(KindChatMessage, "meet me at the docks", nostr.Tags{p, {"subject", "the secret plan"}}, clk.Now().Add(-time.Minute))
	ingest(alice.NewRumor(KindDeletion, "", nostr.Tags{p, {"e", gone.ID}, {"k", "14"}}, clk.Now()))
	ingest(gone)
	if _, err := bs.Message(ctx, gone.ID); err == nil {
		t.Fatal("a message deleted before it arrived was stored")
	}
	cs, err := bs.Conversations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.Subject != "" || c.Messages == 0 {
			t.Errorf("conversation %s: subject %q, %d messages: the deleted message left a trace", c.ID, c.Subject, c.Messages)
		}
	}

	// With a conversation already there, its subject stays its own.
	ingest(alice.NewRumor(KindChatMessage, "hello", nostr.Tags{p, {"subject", "hello"}}, clk.Now().Add(-time.Hour)))
	gone2 := alice.NewRumor(KindChatMessage, "second secret", nostr.Tags{p, {"subject", "another secret"}}, clk.Now())
	ingest(alice.NewRumor(KindDeletion, "", nostr.Tags{p, {"e", gone2.ID}, {"k", "14"}}, clk.Now()))
	ingest(gone2)
	cs, err = bs.Conversations(ctx)
	if err != nil || len(cs) != 1 {
		t.Fatalf("conversations %v (%v)", cs, err)
	}
	if cs[0].Subject != "hello" {
		t.Errorf("subject %q, want %q: a deleted message's subject came back", cs[0].Subject, "hello")
	}
}
