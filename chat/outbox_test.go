package chat

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/internal/relaytest"
)

// silentRelay accepts websockets and reads what it is sent, but never
// answers: a relay that hangs. It counts the EVENTs it was sent.
func silentRelay(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	var events atomic.Int32
	url := relaytest.Scripted(t, func(env nostr.Envelope) []string {
		if _, ok := env.(*nostr.EventEnvelope); ok {
			events.Add(1)
		}
		return nil
	})
	return url, &events
}

// TestStalledRelayDelaysOnlyItsOwnDeliveries: carol's DM relay accepts the
// connection and never answers. While alice's outbox waits on it (for a
// minute here), a message to bob reaches bob's relay. Before, an outbox
// pass waited for every relay, so bob's message waited for carol's relay
// to time out.
func TestStalledRelayDelaysOnlyItsOwnDeliveries(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	alice, bob, carol := newUser(t, clk, "alice"), newUser(t, clk, "bob"), newUser(t, clk, "carol")
	stalled, events := silentRelay(t)
	bob.publishDMRelays(t, bob.relay.url, bob.relay.url)
	carol.publishDMRelays(t, carol.relay.url, stalled)
	as := alice.start(t, func(c *Config) {
		c.DiscoveryRelays = []string{bob.relay.url, carol.relay.url}
		c.AllowPrivateRelays = true // carol's relay, on loopback, is only in her list
		c.PublishTimeout = time.Minute
		c.RelayTimeout = time.Minute
	})

	toCarol, err := as.Send(ctx, []string{carol.key.PublicKey()}, "are you there?", SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the stalled relay to be sent carol's wrap", func() (bool, error) {
		return events.Load() > 0, nil
	})
	if _, err := as.Send(ctx, []string{bob.key.PublicKey()}, "hi bob", SendOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "bob's relay to get his wrap while carol's relay hangs", func() (bool, error) {
		n := len(bob.relay.wraps(t, bob.key.PublicKey()))
		return n == 1, fmt.Errorf("%d wraps", n)
	})
	if m, err := as.Message(ctx, toCarol.ID); err != nil || m.State != StateQueued {
		t.Fatalf("carol's message: %+v (%v), want still queued", m, err)
	}
}

// TestRelayTimeoutBoundsAnAttempt: a relay that never answers holds an
// attempt for RelayTimeout, however long PublishTimeout is; the delivery
// is then retried like any other failed attempt.
func TestRelayTimeoutBoundsAnAttempt(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	alice, carol := newUser(t, clk, "alice"), newUser(t, clk, "carol")
	stalled, events := silentRelay(t)
	carol.publishDMRelays(t, carol.relay.url, stalled)
	as := alice.start(t, func(c *Config) {
		c.DiscoveryRelays = []string{carol.relay.url}
		c.AllowPrivateRelays = true // carol's relay, on loopback, is only in her list
		c.PublishTimeout = time.Minute
		c.RelayTimeout = 300 * time.Millisecond
	})
	m, err := as.Send(ctx, []string{carol.key.PublicKey()}, "are you there?", SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "carol's wrap to be tried again", func() (bool, error) {
		return events.Load() > 1, fmt.Errorf("%d attempts", events.Load())
	})
	var attempts int
	var lastErr string
	if err := as.st.db.QueryRowContext(ctx, `SELECT attempts, last_error FROM deliveries WHERE rumor_id = ? AND self = 0`, m.ID).Scan(&attempts, &lastErr); err != nil {
		t.Fatal(err)
	}
	if attempts < 1 || !strings.Contains(lastErr, "deadline exceeded") {
		t.Fatalf("carol's delivery: %d attempts, last error %q", attempts, lastErr)
	}
	if m, err := as.Message(ctx, m.ID); err != nil || m.State != StateQueued {
		t.Fatalf("carol's message: %+v (%v), want still queued", m, err)
	}
}

// TestRelayTimeoutEndsSending: once RelayTimeout ends an attempt, the
// worker writes nothing more to the relay, and the connection, which the
// pool shares with lookups, stays open for a lookup using it (it leaves
// the pool, having answered no OK in time, and closes once unused). Before,
// a slot that came free as the timeout passed was as likely to be taken as
// the timeout (select picks at random): more EVENTs went out after the
// deadline, each with a context already done, and a write started with one
// makes the websocket library close the connection under every other user
// of the pool.
func TestRelayTimeoutEndsSending(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	alice, carol := newUser(t, clk, "alice"), newUser(t, clk, "carol")
	stalled, events := silentRelay(t)
	as, err := New(Config{
		Key: alice.key, RelayURL: alice.relay.url, DBPath: alice.db, Logger: testLogger(t), Now: clk.Now,
		AllowPrivateRelays: true, // the stalled relay is on loopback
		PublishTimeout:     time.Minute, RelayTimeout: 300 * time.Millisecond, RetryBase: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = as.Close() }) // not started: no outbox but this test's
	var ds []delivery
	for range 4 * maxInFlightPerRelay {
		r := as.w.NewRumor(KindChatMessage, "are you there?", nostr.Tags{{"p", carol.key.PublicKey()}}, clk.Now())
		w, err := as.w.Wrap(r, carol.key.PublicKey(), 0)
		if err != nil {
			t.Fatal(err)
		}
		d := delivery{WrapID: w.ID, Relay: stalled, RumorID: r.ID, Recipient: carol.key.PublicKey(), Wrap: w.String(), CreatedAt: clk.Now().Unix()}
		if err := insertDelivery(ctx, as.st.db, d, clk.Now().UnixMilli()); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	lookup, release, err := as.conn(ctx, stalled) // a lookup using the connection meanwhile
	if err != nil {
		t.Fatal(err)
	}
	as.deliverTo(as.ctx, stalled, ds)
	time.Sleep(100 * time.Millisecond) // for anything written late to arrive
	if n := events.Load(); n != maxInFlightPerRelay {
		t.Errorf("the relay was sent %d EVENTs, want %d (the ones in flight when the relay timeout passed)", n, maxInFlightPerRelay)
	}
	select {
	case <-lookup.Done():
		t.Fatalf("the pooled connection was closed under the lookup using it: %v", lookup.Err())
	default:
	}
	release()
	var pending, once int
	if err := as.st.db.QueryRowContext(ctx, `SELECT count(*), count(*) FILTER (WHERE attempts = 1) FROM deliveries WHERE state = 'pending'`).Scan(&pending, &once); err != nil {
		t.Fatal(err)
	}
	if pending != len(ds) || once != len(ds) {
		t.Fatalf("%d of %d deliveries pending, %d after one attempt: want all, to be retried", pending, len(ds), once)
	}
}

// TestContactWithManyStalledRelays: carol's DM relay list names more
// relays than the outbox serves at once, every one of them hanging. A
// message to bob queued after one to carol still reaches bob's relay at
// once: carol's message goes to her first maxRelaysPerRecipient relays,
// which leaves the other worker slots free. Before, her message went to
// all of them, they took every slot for RelayTimeout, and bob's message
// waited that long (and again at each retry of hers).
func TestContactWithManyStalledRelays(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	alice, bob, carol := newUser(t, clk, "alice"), newUser(t, clk, "bob"), newUser(t, clk, "carol")
	var stalled []string
	var events []*atomic.Int32
	for range maxRelaysInFlight + 4 {
		u, n := silentRelay(t)
		stalled, events = append(stalled, u), append(events, n)
	}
	bob.publishDMRelays(t, bob.relay.url, bob.relay.url)
	carol.publishDMRelays(t, carol.relay.url, stalled...)
	as := alice.start(t, func(c *Config) {
		c.DiscoveryRelays = []string{bob.relay.url, carol.relay.url}
		c.AllowPrivateRelays = true // carol's relays, on loopback, are only in her list
		c.PublishTimeout = time.Minute
		c.RelayTimeout = time.Minute
	})
	toCarol, err := as.Send(ctx, []string{carol.key.PublicKey()}, "are you there?", SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	reached := func() int {
		n := 0
		for _, e := range events {
			if e.Load() > 0 {
				n++
			}
		}
		return n
	}
	eventually(t, 10*time.Second, "carol's relays to be sent her wrap", func() (bool, error) {
		return reached() >= maxRelaysPerRecipient, fmt.Errorf("%d of her relays", reached())
	})
	if _, err := as.Send(ctx, []string{bob.key.PublicKey()}, "hi bob", SendOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "bob's relay to get his wrap while carol's relays hang", func() (bool, error) {
		n := len(bob.relay.wraps(t, bob.key.PublicKey()))
		return n == 1, fmt.Errorf("%d wraps", n)
	})
	if toCarol.Delivery.Relays != maxRelaysPerRecipient || reached() != maxRelaysPerRecipient {
		t.Errorf("carol's message goes to %d relays and %d were sent it, want %d", toCarol.Delivery.Relays, reached(), maxRelaysPerRecipient)
	}
}

// TestMessageDeletedWhileQueuedIsNotSent: bob's DM relay is slow to answer
// a connection, and alice's outbox worker holds her message's delivery
// while it dials. Alice deletes the message meanwhile. Once the relay
// answers, the worker sends nothing of it: bob's relay gets the deletion
// only. Before, the worker sent the deleted message as well.
func TestMessageDeletedWhileQueuedIsNotSent(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	alice, bob := newUser(t, clk, "alice"), newUser(t, clk, "bob")
	slow, as := viaProxy(t, alice, bob, func(c *Config) { c.RelayTimeout = time.Minute })
	release := slow.holdConnections() // alice dials bob's DM relay only to send
	t.Cleanup(release)
	m, err := as.Send(ctx, []string{bob.key.PublicKey()}, "I will regret this", SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var wrapID string
	if err := as.st.db.QueryRowContext(ctx, `SELECT wrap_id FROM deliveries WHERE rumor_id = ? AND self = 0`, m.ID).Scan(&wrapID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "alice's outbox to dial bob's DM relay", func() (bool, error) {
		total, _ := slow.counts()
		return total > 0, nil
	})
	if err := as.Delete(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	release()
	// The deletion goes to the slow relay on a pass after the held one: once
	// it is acknowledged there, whatever the held pass sent is stored.
	eventually(t, 20*time.Second, "the deletion to reach bob's slow DM relay", func() (bool, error) {
		var ok, pending int
		err := as.st.db.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE state = 'ok'), count(*) FILTER (WHERE state = 'pending') FROM deliveries WHERE relay = ?`,
			NormalizeRelay(slow.url)).Scan(&ok, &pending)
		return err == nil && ok > 0 && pending == 0, fmt.Errorf("%d sent, %d pending (%v)", ok, pending, err)
	})
	for _, w := range bob.relay.wraps(t, bob.key.PublicKey()) {
		if w.ID == wrapID {
			t.Fatal("bob's relay got the wrap of the message alice deleted before it was sent")
		}
	}
}

// TestLateDeliveryIsReadByTheInbox: alice queues a message and her node
// stays offline for 30 hours; bob's node meanwhile reconnects to his relay.
// When alice's outbox delivers, bob reads the message. A wrap's created_at
// lies up to 48 hours before the moment it was made, and bob's inbox reads
// back 48 hours (and 10 minutes) before its previous connection: a wrap
// made 30 hours before it reaches the relay can be dated before that. Before,
// the outbox delivered the wrap it made when the message was queued: the
// relay answered OK (alice saw "sent") and bob never read it. Now a wrap
// that waited is made again, newly dated, when it is delivered.
func TestLateDeliveryIsReadByTheInbox(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	alice := newUser(t, clk, "alice")
	bob := newUser(t, clk, "bob")
	bob.publishDMRelays(t, bob.relay.url, bob.relay.url)

	// bob's inbox has connected before: his next connection reads back from then.
	bs := bob.start(t, nil)
	eventually(t, 10*time.Second, "bob's inbox to have subscribed (its cursor set)", func() (bool, error) {
		var n int
		err := bs.st.db.QueryRowContext(ctx, `SELECT count(*) FROM cursors`).Scan(&n)
		return n > 0, err
	})
	if err := bs.Close(); err != nil {
		t.Fatal(err)
	}
	bs = bob.start(t, nil)

	// Wraps dated 47 hours before they are made (NIP-59 allows 48).
	back := func(now time.Time) nostr.Timestamp { return nostr.Timestamp(now.Add(-47 * time.Hour).Unix()) }
	then := &clock{off: -30 * time.Hour}
	queued, err := New(Config{
		Key: alice.key, RelayURL: alice.relay.url, DBPath: alice.db, Logger: testLogger(t).With("user", "alice"),
		Now: then.Now, DiscoveryRelays: []string{bob.relay.url},
	})
	if err != nil {
		t.Fatal(err)
	}
	queued.w.past = back
	m, err := queued.Send(ctx, []string{bob.key.Npub()}, "sent before the trip", SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := queued.Close(); err != nil { // offline before the outbox ran
		t.Fatal(err)
	}

	as, err := New(Config{
		Key: alice.key, RelayURL: alice.relay.url, DBPath: alice.db, Logger: testLogger(t).With("user", "alice"),
		Now: clk.Now, DiscoveryRelays: []string{bob.relay.url},
		RetryBase: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond, PurgeInterval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = as.Close() })
	as.w.past = back
	if err := as.Start(ctx); err != nil {
		t.Fatal(err)
	}
	sent, err := as.WaitSent(ctxT(t, 15*time.Second), m.ID)
	if err != nil || sent.State != StateSent {
		t.Fatalf("alice's message: %v (%v)", sent.Status(), err)
	}
	if n := len(bob.relay.wraps(t, bob.key.PublicKey())); n != 1 {
		t.Fatalf("bob's relay holds %d wraps for him, want 1", n)
	}
	eventually(t, 15*time.Second, "bob reads the message delivered late", func() (bool, error) {
		_, err := bs.Message(ctx, m.ID)
		return err == nil, nil
	})
}
