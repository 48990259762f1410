package payments

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/chat"
)

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// requestFrom is a tip request rumor from peer to me.
func requestFrom(peer, me, id string, msat string) *chat.Message {
	return &chat.Message{ID: randHex(32), Sender: peer, Kind: chat.KindTipRequest, Conversation: chat.ConversationID([]string{me, peer}),
		Tags: nostr.Tags{{"p", me}, {"tip", id}, {"amount", msat}}}
}

// An incoming tip whose invoice expired unpaid (LND cancels it, and its
// invoice stream never says so) ends failed, the sender is told, and it no
// longer counts against MaxOpenPerPeer. Such tips used to stay invoiced
// forever, and once MaxOpenPerPeer of them had piled up every later request
// of that peer was refused.
func TestExpiredInvoiceEndsTip(t *testing.T) {
	ctx := context.Background()
	ln, clock := newFakeLN(), &fakeClock{t: time.Unix(1_800_000_000, 0)}
	me, peer := newKey(t).PublicKey(), newKey(t).PublicKey()
	ch := &fakeChat{me: me}
	e := newFakeEngine(t, ln, ch, clock)

	var ids []string
	for range MaxOpenPerPeer {
		id := newTipID()
		ids = append(ids, id)
		e.onMessage(ctx, requestFrom(peer, me, id, "1000000"))
	}
	e.runSteps()
	for _, id := range ids {
		if tip, err := e.Get(ctx, id); err != nil || tip.State != StateInvoiced {
			t.Fatalf("tip %s: %v %v, want invoiced", id, tip, err)
		}
	}
	// Half an hour on, nothing has changed.
	clock.add(30 * time.Minute)
	e.runSteps()
	for _, id := range ids {
		if tip, _ := e.Get(ctx, id); tip.State != StateInvoiced {
			t.Fatalf("tip with an open invoice is %s, want invoiced", tip.Status())
		}
	}
	// After the expiry LND's expiry watcher has cancelled the invoices, and
	// deleted one (gc-canceled-invoices-on-the-fly), but it has not got to
	// the last one yet.
	clock.add(e.cfg.InvoiceExpiry)
	hashOf := func(id string) string { tip, _ := e.Get(ctx, id); return tip.PaymentHash }
	ln.mu.Lock()
	for _, inv := range ln.invoices {
		inv.State = InvoiceCanceled
	}
	ln.invoices[hashOf(ids[len(ids)-1])].State = InvoiceOpen
	delete(ln.invoices, hashOf(ids[0]))
	ln.mu.Unlock()
	e.runSteps()
	check := func(ids []string, want State) {
		t.Helper()
		for _, id := range ids {
			tip, err := e.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if tip.State != want {
				t.Fatalf("tip is %s, want %s", tip.Status(), want)
			}
			told := ch.sentOf(chat.KindTipStatus, id)
			if want == StateFailed && (len(told) != 1 || tag(told[0].Tags, "state") != string(StateFailed)) || want != StateFailed && len(told) != 0 {
				t.Fatalf("sender told %v about a tip that is %s", told, want)
			}
		}
	}
	check(ids[:len(ids)-1], StateFailed)
	check(ids[len(ids)-1:], StateInvoiced)
	ln.mu.Lock()
	ln.invoices[hashOf(ids[len(ids)-1])].State = InvoiceCanceled
	ln.mu.Unlock()
	clock.add(2 * time.Minute)
	e.runSteps()
	check(ids, StateFailed)
	// The peer may tip again.
	id := newTipID()
	e.onMessage(ctx, requestFrom(peer, me, id, "1000000"))
	e.runSteps()
	if tip, err := e.Get(ctx, id); err != nil || tip.State != StateInvoiced {
		t.Fatalf("a new request after the expired ones: %v %v, want invoiced", tip.Status(), err)
	}
}
