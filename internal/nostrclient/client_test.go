package nostrclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anchorchat/anchorchat/internal/nostrclient"
	"github.com/anchorchat/anchorchat/internal/relaytest"
	"github.com/nbd-wtf/go-nostr"
)

type key struct{ sk, pk string }

func newKey(t testing.TB) key {
	t.Helper()
	sk := nostr.GeneratePrivateKey()
	pk, err := nostr.GetPublicKey(sk)
	if err != nil {
		t.Fatal(err)
	}
	return key{sk, pk}
}

func (k key) event(t testing.TB, kind int, content string, tags ...nostr.Tag) *nostr.Event {
	t.Helper()
	e := &nostr.Event{Kind: kind, Content: content, CreatedAt: nostr.Now(), Tags: nostr.Tags(tags)}
	if tags == nil {
		e.Tags = nostr.Tags{}
	}
	if err := e.Sign(k.sk); err != nil {
		t.Fatal(err)
	}
	return e
}

func (k key) signer() func(*nostr.Event) error {
	return func(e *nostr.Event) error { return e.Sign(k.sk) }
}

func dial(t testing.TB, ctx context.Context, url string, o nostrclient.Options) *nostrclient.Conn {
	t.Helper()
	c, err := nostrclient.Dial(ctx, url, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestPublishQuerySubscribe(t *testing.T) {
	owner, stranger := newKey(t), newKey(t)
	r := relaytest.Start(t, relaytest.Options{Owner: owner.pk})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := dial(t, ctx, r.URL, nostrclient.Options{})
	if c.URL() != r.URL {
		t.Fatalf("URL %q", c.URL())
	}

	first := owner.event(t, 1, "first")
	if err := c.Publish(ctx, first); err != nil {
		t.Fatalf("owner's publish: %v", err)
	}
	// A refusal is a RejectedError carrying the relay's reason.
	err := c.Publish(ctx, stranger.event(t, 1, "spam"))
	var rej *nostrclient.RejectedError
	if !errors.As(err, &rej) || !strings.HasPrefix(rej.Reason, "restricted:") || !rej.Permanent() || rej.Relay != r.URL {
		t.Fatalf("stranger's publish: %#v", err)
	}
	if (&nostrclient.RejectedError{Reason: "rate-limited: slow down"}).Permanent() {
		t.Fatal("rate-limited: is not permanent")
	}

	got, err := c.Query(ctx, nostr.Filter{Authors: []string{owner.pk}})
	if err != nil || len(got) != 1 || got[0].ID != first.ID {
		t.Fatalf("query: %v %v", got, err)
	}

	// A live subscription: stored events first, then new ones.
	sub, err := c.Subscribe(ctx, nostr.Filter{Kinds: []int{1}})
	if err != nil || len(sub.Stored) != 1 {
		t.Fatalf("subscribe: %v %v", sub, err)
	}
	second := owner.event(t, 1, "second")
	if err := dial(t, ctx, r.URL, nostrclient.Options{}).Publish(ctx, second); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-sub.Events():
		if e.ID != second.ID {
			t.Fatalf("live event %s, want %s", e.ID, second.ID)
		}
	case <-ctx.Done():
		t.Fatal("no live event")
	}
	// After Unsubscribe nothing more arrives on it.
	c.Unsubscribe(sub)
	if err := c.Publish(ctx, owner.event(t, 1, "third")); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-sub.Events():
		t.Fatalf("event %s after Unsubscribe", e.ID)
	case <-time.After(200 * time.Millisecond):
	}
}

// A live subscription nobody reads fills its buffer and holds up the
// connection's reader; Unsubscribe must release it, so OKs flow again.
func TestUnsubscribeReleasesAStalledReader(t *testing.T) {
	owner := newKey(t)
	r := relaytest.Start(t, relaytest.Options{Owner: owner.pk})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := dial(t, ctx, r.URL, nostrclient.Options{})
	sub, err := c.Subscribe(ctx, nostr.Filter{Kinds: []int{1}})
	if err != nil {
		t.Fatal(err)
	}
	pub := dial(t, ctx, r.URL, nostrclient.Options{})
	for i := range 300 { // more than the subscription buffers
		if err := pub.Publish(ctx, owner.event(t, 1, fmt.Sprint("flood ", i))); err != nil {
			t.Fatal(err)
		}
	}
	c.Unsubscribe(sub)
	pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
	defer pcancel()
	if err := c.Publish(pctx, owner.event(t, 1, "after")); err != nil {
		t.Fatalf("publish after Unsubscribe: %v", err)
	}
}

// Private mail needs NIP-42: the client answers the relay's challenge with
// its signer and asks again; without a signer it reports the refusal.
func TestAuthWhenAsked(t *testing.T) {
	owner, sender := newKey(t), newKey(t)
	r := relaytest.Start(t, relaytest.Options{Owner: owner.pk})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wrap := sender.event(t, nostr.KindGiftWrap, "sealed", nostr.Tag{"p", owner.pk})
	if err := dial(t, ctx, r.URL, nostrclient.Options{}).Publish(ctx, wrap); err != nil {
		t.Fatalf("delivering a gift wrap: %v", err)
	}
	f := nostr.Filter{Kinds: []int{nostr.KindGiftWrap}, Tags: nostr.TagMap{"p": {owner.pk}}}

	_, err := dial(t, ctx, r.URL, nostrclient.Options{}).Query(ctx, f)
	if err == nil || !strings.Contains(err.Error(), "auth-required:") {
		t.Fatalf("query without a signer: %v", err)
	}
	got, err := dial(t, ctx, r.URL, nostrclient.Options{Sign: owner.signer()}).Query(ctx, f)
	if err != nil || len(got) != 1 || got[0].ID != wrap.ID {
		t.Fatalf("query as the owner: %v %v", got, err)
	}
	// Another key authenticates too, and the relay's refusal comes back.
	got, err = dial(t, ctx, r.URL, nostrclient.Options{Sign: sender.signer()}).Query(ctx, f)
	if err == nil || !strings.Contains(err.Error(), "restricted:") {
		t.Fatalf("query as someone else: %v %v", got, err)
	}
}

// Close and a lost connection may come in any order and at the same time
// (go-nostr's Relay races here); every call on a dead connection returns an
// error instead of hanging. Run with -race to check the first half.
func TestCloseWhileConnectionDrops(t *testing.T) {
	owner := newKey(t)
	r := relaytest.Start(t, relaytest.Options{Owner: owner.pk})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for round := range 5 {
		conns := make([]*nostrclient.Conn, 16)
		for i := range conns {
			conns[i] = dial(t, ctx, r.URL, nostrclient.Options{})
		}
		var wg sync.WaitGroup
		for i, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if i%2 == 0 {
					c.Close()
				} else {
					_ = c.Publish(ctx, owner.event(t, 1, "racing"))
				}
			}()
		}
		r.Stop()
		wg.Wait()
		for i, c := range conns {
			select {
			case <-c.Done():
			case <-ctx.Done():
				t.Fatalf("round %d: connection %d not done after the relay went away", round, i)
			}
			if c.Err() == nil {
				t.Fatalf("round %d: connection %d ended without a reason", round, i)
			}
			if err := c.Publish(ctx, owner.event(t, 1, "too late")); err == nil {
				t.Fatalf("round %d: publish on a dead connection succeeded", round)
			}
			if _, err := c.Query(ctx, nostr.Filter{}); err == nil {
				t.Fatalf("round %d: query on a dead connection succeeded", round)
			}
			c.Close() // twice is fine
		}
		r.Restart()
	}
}

func TestDialErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := nostrclient.Dial(ctx, "ws://127.0.0.1:1", nostrclient.Options{}); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("dial of a closed port: %v", err)
	}
	// Without a signer, Auth says so instead of waiting for a challenge.
	r := relaytest.Start(t, relaytest.Options{})
	if err := dial(t, ctx, r.URL, nostrclient.Options{}).Auth(ctx); err == nil {
		t.Fatal("Auth without a signer succeeded")
	}
}

// fakeRelay is a scripted websocket server for what a real relay never
// sends: it greets each connection with greet, answers a REQ with reply
// (where "SUB" stands for the subscription id) and an AUTH with OK true,
// reporting the challenge the AUTH event named.
func fakeRelay(t *testing.T, greet, reply []string) (url string, challenges <-chan string) {
	t.Helper()
	got := make(chan string, 4)
	url = relaytest.Scripted(t, func(env nostr.Envelope) []string {
		switch env := env.(type) {
		case *nostr.ReqEnvelope:
			out := make([]string, len(reply))
			for i, f := range reply {
				out[i] = strings.ReplaceAll(f, "SUB", env.SubscriptionID)
			}
			return out
		case *nostr.AuthEnvelope:
			got <- env.Event.Tags.GetFirst([]string{"challenge"}).Value()
			ok, _ := json.Marshal([]any{"OK", env.Event.ID, true, ""})
			return []string{string(ok)}
		}
		return nil
	}, greet...)
	return url, got
}

// A relay's odd or hostile frames neither crash the client nor confuse it:
// an empty challenge followed by another (this used to close a channel
// twice and panic), frames that are not JSON, events and CLOSED for
// subscriptions it never opened, a repeated EOSE.
func TestOddFramesFromTheRelay(t *testing.T) {
	k := newKey(t)
	evt := k.event(t, 1, "stored")
	raw, _ := json.Marshal(evt)
	url, challenges := fakeRelay(t,
		[]string{`["AUTH",""]`, `not json`, `["AUTH","second"]`, `["NOTICE"]`},
		[]string{`["EVENT","nobody",` + string(raw) + `]`, `["CLOSED","nobody","x"]`, `["EVENT","SUB",` + string(raw) + `]`, `["EOSE","SUB"]`, `["EOSE","SUB"]`, `[]`})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := dial(t, ctx, url, nostrclient.Options{Sign: k.signer()})
	got, err := c.Query(ctx, nostr.Filter{Kinds: []int{1}})
	if err != nil || len(got) != 1 || got[0].ID != evt.ID {
		t.Fatalf("query: %v %v", got, err)
	}
	if err := c.Auth(ctx); err != nil {
		t.Fatal(err)
	}
	if ch := <-challenges; ch != "second" {
		t.Fatalf("AUTH answered challenge %q, want the newest, \"second\"", ch)
	}
	select {
	case <-c.Done():
		t.Fatalf("connection ended: %v", c.Err())
	default:
	}
}

// A relay streaming stored events without end (no EOSE) cannot make the
// client collect them without bound: past the limit the subscription
// fails, and the connection goes on serving.
func TestStoredEventsAreBounded(t *testing.T) {
	k := newKey(t)
	evt := k.event(t, 1, "again and again")
	raw, _ := json.Marshal(evt)
	flood := make([]string, 500)
	for i := range flood {
		flood[i] = `["EVENT","SUB",` + string(raw) + `]`
	}
	url, challenges := fakeRelay(t, []string{`["AUTH","c"]`}, flood)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, o := range []nostrclient.Options{
		{MaxStoredEvents: 100, Sign: k.signer()},
		{MaxStoredBytes: 50 * len(flood[0]), Sign: k.signer()},
	} {
		c := dial(t, ctx, url, o)
		_, err := c.Query(ctx, nostr.Filter{Kinds: []int{1}})
		if err == nil || !strings.Contains(err.Error(), "before EOSE") {
			t.Fatalf("%+v: query of an endless relay: %v", o, err)
		}
		if err := c.Auth(ctx); err != nil { // the connection still works
			t.Fatalf("after the overflow: %v", err)
		}
		<-challenges
	}
}

// A relay may end a live subscription with CLOSED; the subscriber learns
// it (and why) instead of waiting for events that will never come.
func TestRelayEndsLiveSubscription(t *testing.T) {
	url, _ := fakeRelay(t, nil, []string{`["EOSE","SUB"]`, `["CLOSED","SUB","error: shutting down"]`})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := dial(t, ctx, url, nostrclient.Options{})
	sub, err := c.Subscribe(ctx, nostr.Filter{Kinds: []int{1}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-sub.Ended():
		if r := sub.Reason(); r != "error: shutting down" {
			t.Fatalf("reason %q", r)
		}
	case <-ctx.Done():
		t.Fatal("the relay's CLOSED went unnoticed")
	}
}

// The client hands on only events that match what was asked and whose id
// and signature check, whatever the relay sends.
func TestRelayAnswersAreChecked(t *testing.T) {
	k, other := newKey(t), newKey(t)
	genuine := k.event(t, 1, "genuine")
	forged := *genuine
	forged.Sig = strings.Repeat("ab", 64)
	tampered := *genuine
	tampered.Content = "tampered"
	var frames []string
	for _, e := range []*nostr.Event{&forged, &tampered, other.event(t, 1, "not the author asked for"), k.event(t, 7, "not the kind asked for"), genuine} {
		raw, _ := json.Marshal(e)
		frames = append(frames, `["EVENT","SUB",`+string(raw)+`]`)
	}
	url, _ := fakeRelay(t, nil, append(frames, `["EOSE","SUB"]`))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := dial(t, ctx, url, nostrclient.Options{}).Query(ctx, nostr.Filter{Kinds: []int{1}, Authors: []string{k.pk}})
	if err != nil || len(got) != 1 || got[0].ID != genuine.ID || got[0].Sig != genuine.Sig {
		t.Fatalf("got %v %v, want only the genuine event", got, err)
	}
}

// A caller whose context is already done gets an error and leaves the
// connection to the others: coder/websocket closes a connection whose
// write starts with a done context, so a shared connection used to die
// with the first caller that ran out of time.
func TestDoneContextLeavesTheConnection(t *testing.T) {
	owner := newKey(t)
	r := relaytest.Start(t, relaytest.Options{Owner: owner.pk})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := dial(t, ctx, r.URL, nostrclient.Options{})
	done, stop := context.WithCancel(ctx)
	stop()
	late := owner.event(t, 1, "late")
	for range 50 { // the websocket library picks at random between a done context and a free lock
		if err := c.Publish(done, late); !errors.Is(err, context.Canceled) {
			t.Fatalf("publish with a done context: %v", err)
		}
		if _, err := c.Query(done, nostr.Filter{Kinds: []int{1}}); !errors.Is(err, context.Canceled) {
			t.Fatalf("query with a done context: %v", err)
		}
	}
	select {
	case <-c.Done():
		t.Fatalf("the connection closed: %v", c.Err())
	default:
	}
	if err := c.Publish(ctx, owner.event(t, 1, "on time")); err != nil {
		t.Fatalf("publish afterwards: %v", err)
	}
}

// Two callers waiting for the OK of the same event id on one connection
// (the same event published twice at once, or two AUTH events signed in
// the same second, which have the same id) each get an answer: the second
// used to take the first's place among the waiters, and the first then
// waited for an OK that had already gone to the other, until its context
// ended.
func TestSameEventPublishedTwiceAtOnce(t *testing.T) {
	k := newKey(t)
	evt := k.event(t, 1, "twice")
	var mu sync.Mutex
	seen := 0
	url := relaytest.Scripted(t, func(env nostr.Envelope) []string {
		e, ok := env.(*nostr.EventEnvelope)
		if !ok {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		if seen++; seen < 2 {
			return nil // answer both once both are waiting
		}
		ok1, _ := json.Marshal([]any{"OK", e.Event.ID, true, ""})
		ok2, _ := json.Marshal([]any{"OK", e.Event.ID, true, "duplicate: have it"})
		return []string{string(ok1), string(ok2)}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := dial(t, ctx, url, nostrclient.Options{})
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- c.Publish(ctx, evt) }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
}
