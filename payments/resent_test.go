package payments

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/chat"
)

// A tip request handed to chat is sent once, even when the Tip call's
// context ends just after chat took it: the outbox row is deleted and the
// request id recorded whatever the caller's context. Both used the
// caller's context, failed, and the worker sent the request again, as a
// second rumor with another id.
func TestRequestSentOnceWhenCallerLeaves(t *testing.T) {
	ln, clock := newFakeLN(), &fakeClock{t: time.Unix(1_800_000_000, 0)}
	me, peer := newKey(t).PublicKey(), newKey(t).PublicKey()
	ch := &fakeChat{me: me, contacts: map[string]*chat.Contact{"@bob": {PubKey: peer}}}
	e := newFakeEngine(t, ln, ch, clock)
	ctx, cancel := context.WithCancel(context.Background())
	ch.afterSend = cancel // the caller hangs up as chat takes the request
	_, _ = e.Tip(ctx, TipRequest{To: "@bob", AmountSat: 1000, Mode: ModeInvoice})
	ch.afterSend = nil
	for range 3 {
		clock.add(time.Second)
		e.runSteps()
	}
	reqs := ch.sentOf(chat.KindTipRequest, ch.sent[0].TipID())
	if len(reqs) != 1 {
		t.Fatalf("%d tip requests sent, want 1", len(reqs))
	}
	tip, err := e.Get(context.Background(), reqs[0].TipID())
	if err != nil || tip.RequestID != reqs[0].ID {
		t.Fatalf("tip %+v (%v): want its request id %s", tip, err, reqs[0].ID)
	}
}

// A request sent twice (we crashed after chat took it and before our store
// recorded that: the outbox sends it again, as a second rumor) is still
// paid when the recipient invoices the first, which it did: the second
// repeats a known tip id and gets no invoice. The invoice was refused as
// answering another request than the tip's, and the tip never paid.
func TestInvoiceForResentRequestPaid(t *testing.T) {
	ctx := context.Background()
	ln, clock := newFakeLN(), &fakeClock{t: time.Unix(1_800_000_000, 0)}
	me, peer := newKey(t).PublicKey(), newKey(t).PublicKey()
	ch := &fakeChat{me: me, contacts: map[string]*chat.Contact{"@bob": {PubKey: peer}}}
	e := newFakeEngine(t, ln, ch, clock)
	tip, err := e.Tip(ctx, TipRequest{To: "@bob", AmountSat: 1000, Memo: "thanks", Mode: ModeInvoice})
	if err != nil || tip.RequestID == "" {
		t.Fatalf("%+v %v", tip, err)
	}
	first := tip.RequestID
	// The crash: chat has the request, our store still has it queued.
	if err := e.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE tips SET request_id = '' WHERE id = ?`, tip.ID); err != nil {
			return err
		}
		return enqueue(ctx, tx, tip.ID, "out", peer, chat.KindTipRequest, "thanks", nostr.Tags{{"tip", tip.ID}, {"amount", "1000000"}})
	}); err != nil {
		t.Fatal(err)
	}
	clock.add(time.Second)
	e.runSteps()
	if reqs := ch.sentOf(chat.KindTipRequest, tip.ID); len(reqs) != 2 {
		t.Fatalf("%d requests sent, want the request and its repeat", len(reqs))
	}
	// The recipient invoices the first request.
	pre := [32]byte{5}
	h := sha256.Sum256(pre[:])
	hash := hex.EncodeToString(h[:])
	ln.payReqs["lnbcrt1"] = &PayReq{Destination: ln.node, PaymentHash: hash, AmountMsat: 1_000_000,
		DescriptionHash: first, Timestamp: clock.now(), Expiry: time.Hour}
	ln.tracked[hash] = &Payment{Status: PaymentSucceeded, PaymentHash: hash, Preimage: pre[:]}
	e.onMessage(ctx, &chat.Message{ID: strings.Repeat("1f", 32), Sender: peer, Kind: chat.KindTipInvoice,
		Tags: nostr.Tags{{"p", me}, {"tip", tip.ID}, {"e", first}, {"amount", "1000000"}, {"bolt11", "lnbcrt1"}}})
	e.runSteps()
	got, err := e.Get(ctx, tip.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != StatePaid || got.PaymentHash != hash {
		t.Fatalf("tip is %s; want paid with the invoice for its first request", got.Status())
	}
	if ln.pays != 1 {
		t.Fatalf("LND asked to pay %d times, want 1", ln.pays)
	}
}

// An invoice that names no request (no e tag) is refused also while our
// request's id is not recorded yet (after a crash between chat taking it
// and our store noting it): "" matched the empty request id, so the
// invoice, committing to nothing, was paid.
func TestInvoiceNamingNoRequestRefused(t *testing.T) {
	ctx := context.Background()
	ln, clock := newFakeLN(), &fakeClock{t: time.Unix(1_800_000_000, 0)}
	me, peer := newKey(t).PublicKey(), newKey(t).PublicKey()
	ch := &fakeChat{me: me, contacts: map[string]*chat.Contact{"@bob": {PubKey: peer}}}
	e := newFakeEngine(t, ln, ch, clock)
	tip, err := e.Tip(ctx, TipRequest{To: "@bob", AmountSat: 1000, Mode: ModeInvoice})
	if err != nil || tip.RequestID == "" {
		t.Fatalf("%+v %v", tip, err)
	}
	if _, err := e.st.db.ExecContext(ctx, `UPDATE tips SET request_id = '' WHERE id = ?`, tip.ID); err != nil {
		t.Fatal(err)
	}
	pre := [32]byte{6}
	h := sha256.Sum256(pre[:])
	hash := hex.EncodeToString(h[:])
	ln.payReqs["lnbcrt2"] = &PayReq{Destination: ln.node, PaymentHash: hash, AmountMsat: 1_000_000,
		Timestamp: clock.now(), Expiry: time.Hour}
	ln.tracked[hash] = &Payment{Status: PaymentSucceeded, PaymentHash: hash, Preimage: pre[:]}
	e.onMessage(ctx, &chat.Message{ID: strings.Repeat("2e", 32), Sender: peer, Kind: chat.KindTipInvoice,
		Tags: nostr.Tags{{"p", me}, {"tip", tip.ID}, {"amount", "1000000"}, {"bolt11", "lnbcrt2"}}})
	e.runSteps()
	got, err := e.Get(ctx, tip.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ln.pays != 0 || got.State == StatePaid || got.State == StateInvoiced {
		t.Fatalf("an invoice naming no request: tip %s, %d payments; want it refused", got.Status(), ln.pays)
	}
}

// A Tip whose caller leaves once the tip is stored (the node stopping, a
// client hanging up) still returns the tip: it will go ahead, and an error
// ("the node is stopping") would invite the user to tip again.
func TestTipReturnedWhenCallerLeavesAfterStoring(t *testing.T) {
	ln, clock := newFakeLN(), &fakeClock{t: time.Unix(1_800_000_000, 0)}
	me, peer := newKey(t).PublicKey(), newKey(t).PublicKey()
	ch := &fakeChat{me: me, contacts: map[string]*chat.Contact{"@bob": {PubKey: peer}}}
	e := newFakeEngine(t, ln, ch, clock)
	ctx, cancel := context.WithCancel(context.Background())
	ch.afterSend = cancel
	tip, err := e.Tip(ctx, TipRequest{To: "@bob", AmountSat: 1000, Mode: ModeInvoice})
	ch.afterSend = nil
	if err != nil || tip == nil || tip.State != StateRequested {
		t.Fatalf("Tip after its caller left: %+v, %v; want the stored tip", tip, err)
	}
}
