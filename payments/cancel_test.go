package payments

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"testing"
	"time"

	"github.com/anchorchat/anchorchat/chat"
)

// incoming is an engine on fakes to which peer sent a request for a
// 1,000 sat tip, whose invoice it has made.
type incoming struct {
	e     *Engine
	ln    *fakeLN
	clock *fakeClock
	peer  string
	req   *chat.Message
	tip   *Tip // as invoiced
}

func newIncoming(t *testing.T) *incoming {
	t.Helper()
	ln, clock := newFakeLN(), &fakeClock{t: time.Unix(1_800_000_000, 0)}
	me, peer := newKey(t).PublicKey(), newKey(t).PublicKey()
	in := &incoming{e: newFakeEngine(t, ln, &fakeChat{me: me}, clock), ln: ln, clock: clock, peer: peer}
	in.req = requestFrom(peer, me, newTipID(), "1000000")
	in.e.onMessage(context.Background(), in.req)
	in.e.runSteps()
	tip, err := in.e.Get(context.Background(), in.req.TipID())
	if err != nil || tip.State != StateInvoiced {
		t.Fatalf("%v %v", tip, err)
	}
	in.tip = tip
	return in
}

// keysend settles the tip by keysend (preimage [32]byte{b}), as the
// sender's node does when no invoice came in time.
func (in *incoming) keysend(t *testing.T, b byte) {
	t.Helper()
	rec, _ := json.Marshal(tipRecord{Tip: in.tip.ID, From: in.peer, Request: in.req.ID})
	pre := [32]byte{b}
	h := sha256.Sum256(pre[:])
	if err := in.e.onInvoiceUpdate(context.Background(), in.ln.settle(&Invoice{PaymentHash: h[:], Keysend: true, AmountPaidMsat: 1_000_000,
		CustomRecords: map[uint64][]byte{RecordTip: rec}})); err != nil {
		t.Fatal(err)
	}
}

// invoiceAfterRound runs the worker a second later and returns the state,
// in LND, of the invoice the tip was first given.
func (in *incoming) invoiceAfterRound(t *testing.T) InvoiceState {
	t.Helper()
	in.clock.add(time.Second)
	in.e.runSteps()
	inv, _ := in.ln.LookupInvoice(context.Background(), mustDecodeHex(t, in.tip.PaymentHash))
	return inv.State
}

// Cancelling an incoming tip cancels its invoice in LND at the worker's next
// round, not only once the invoice would have expired anyway (makeInvoice
// schedules the expiry check, and the cancellation waited for it).
func TestCancelIncomingCancelsInvoice(t *testing.T) {
	in := newIncoming(t)
	if _, err := in.e.Cancel(context.Background(), in.tip.ID); err != nil {
		t.Fatal(err)
	}
	if st := in.invoiceAfterRound(t); st != InvoiceCanceled {
		t.Fatalf("invoice of the cancelled tip is %s in LND, want canceled", st)
	}
}

// A keysend that settles a tip we had invoiced cancels our invoice in LND,
// as docs/protocol.md says. The keysend's payment hash replaced the
// invoice's on the tip, and the cancellation then named the keysend's
// own (settled) payment: the invoice stayed open.
func TestKeysendCancelsOurInvoice(t *testing.T) {
	in := newIncoming(t)
	in.keysend(t, 9)
	st := in.invoiceAfterRound(t)
	if got, _ := in.e.Get(context.Background(), in.tip.ID); got.State != StateSettled || !got.Keysend {
		t.Fatalf("tip is %s, want settled by keysend", got.Status())
	}
	if st != InvoiceCanceled {
		t.Fatalf("our invoice of the tip paid by keysend is %s in LND, want canceled", st)
	}
}

// finish decides whether to cancel our invoice from the row, not from the
// caller's copy of the tip: Cancel and a sender's status read the tip
// before finishing it, and an invoice made in between stayed open in LND
// (payable) while the tip showed cancelled.
func TestFinishCancelsInvoiceMadeMeanwhile(t *testing.T) {
	ctx := context.Background()
	ln, clock := newFakeLN(), &fakeClock{t: time.Unix(1_800_000_000, 0)}
	me, peer := newKey(t).PublicKey(), newKey(t).PublicKey()
	e := newFakeEngine(t, ln, &fakeChat{me: me}, clock)

	id := newTipID()
	e.onMessage(ctx, requestFrom(peer, me, id, "1000000"))
	stale, err := e.Get(ctx, id)
	if err != nil || stale.State != StateRequested {
		t.Fatalf("%v %v", stale, err)
	}
	e.runSteps() // the invoice is made
	if ok, err := e.finish(ctx, stale, StateCancelled, "cancelled by the recipient", true); !ok || err != nil {
		t.Fatalf("finish: %v %v", ok, err)
	}
	clock.add(time.Second)
	e.runSteps()
	tip, _ := e.Get(ctx, id)
	if inv, _ := ln.LookupInvoice(ctx, mustDecodeHex(t, tip.PaymentHash)); inv.State != InvoiceCanceled {
		t.Fatalf("invoice of the cancelled tip is %s in LND, want canceled", inv.State)
	}
}

// A keysend that settles a tip whose invoice's cancellation is still to
// run (the tip was cancelled, and LND was away or the worker had not come
// round yet) keeps that cancellation: the keysend's payment hash replaces
// the invoice's on the tip, and settling it cleared cancel_inv, so the
// invoice stayed open in LND.
func TestKeysendKeepsPendingInvoiceCancel(t *testing.T) {
	in := newIncoming(t)
	if _, err := in.e.Cancel(context.Background(), in.tip.ID); err != nil {
		t.Fatal(err)
	}
	// Before the worker cancels the invoice, the sender's keysend settles.
	in.keysend(t, 7)
	st := in.invoiceAfterRound(t)
	if got, _ := in.e.Get(context.Background(), in.tip.ID); got.State != StateSettled || !got.Keysend {
		t.Fatalf("tip is %s, want settled by keysend", got.Status())
	}
	if st != InvoiceCanceled {
		t.Fatalf("our invoice of the cancelled tip, then paid by keysend, is %s in LND, want canceled", st)
	}
}
