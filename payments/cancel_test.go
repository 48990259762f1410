package payments

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"testing"
	"time"
)

// Cancelling an incoming tip cancels its invoice in LND at the worker's next
// round, not only once the invoice would have expired anyway (makeInvoice
// schedules the expiry check, and the cancellation waited for it).
func TestCancelIncomingCancelsInvoice(t *testing.T) {
	ctx := context.Background()
	ln, clock := newFakeLN(), &fakeClock{t: time.Unix(1_800_000_000, 0)}
	me, peer := newKey(t).PublicKey(), newKey(t).PublicKey()
	e := newFakeEngine(t, ln, &fakeChat{me: me}, clock)

	id := newTipID()
	e.onMessage(ctx, requestFrom(peer, me, id, "1000000"))
	e.runSteps()
	tip, err := e.Get(ctx, id)
	if err != nil || tip.State != StateInvoiced {
		t.Fatalf("%v %v", tip, err)
	}
	if _, err := e.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	clock.add(time.Second)
	e.runSteps()
	h := mustDecodeHex(t, tip.PaymentHash)
	if inv, _ := ln.LookupInvoice(ctx, h); inv.State != InvoiceCanceled {
		t.Fatalf("invoice of the cancelled tip is %s in LND, want canceled", inv.State)
	}
}

// A keysend that settles a tip we had invoiced cancels our invoice in LND,
// as docs/protocol.md says. The keysend's payment hash replaced the
// invoice's on the tip, and the cancellation then named the keysend's
// own (settled) payment: the invoice stayed open.
func TestKeysendCancelsOurInvoice(t *testing.T) {
	ctx := context.Background()
	ln, clock := newFakeLN(), &fakeClock{t: time.Unix(1_800_000_000, 0)}
	me, peer := newKey(t).PublicKey(), newKey(t).PublicKey()
	e := newFakeEngine(t, ln, &fakeChat{me: me}, clock)

	id := newTipID()
	req := requestFrom(peer, me, id, "1000000")
	e.onMessage(ctx, req)
	e.runSteps()
	tip, err := e.Get(ctx, id)
	if err != nil || tip.State != StateInvoiced {
		t.Fatalf("%v %v", tip, err)
	}
	rec, _ := json.Marshal(tipRecord{Tip: id, From: peer, Request: req.ID})
	pre := [32]byte{9}
	h := sha256.Sum256(pre[:])
	if err := e.onInvoiceUpdate(ctx, ln.settle(&Invoice{PaymentHash: h[:], Keysend: true, AmountPaidMsat: 1_000_000,
		CustomRecords: map[uint64][]byte{RecordTip: rec}})); err != nil {
		t.Fatal(err)
	}
	clock.add(time.Second)
	e.runSteps()
	if got, _ := e.Get(ctx, id); got.State != StateSettled || !got.Keysend {
		t.Fatalf("tip is %s, want settled by keysend", got.Status())
	}
	if inv, _ := ln.LookupInvoice(ctx, mustDecodeHex(t, tip.PaymentHash)); inv.State != InvoiceCanceled {
		t.Fatalf("our invoice of the tip paid by keysend is %s in LND, want canceled", inv.State)
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
	ctx := context.Background()
	ln, clock := newFakeLN(), &fakeClock{t: time.Unix(1_800_000_000, 0)}
	me, peer := newKey(t).PublicKey(), newKey(t).PublicKey()
	e := newFakeEngine(t, ln, &fakeChat{me: me}, clock)

	id := newTipID()
	req := requestFrom(peer, me, id, "1000000")
	e.onMessage(ctx, req)
	e.runSteps()
	tip, err := e.Get(ctx, id)
	if err != nil || tip.State != StateInvoiced {
		t.Fatalf("%v %v", tip, err)
	}
	if _, err := e.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	// Before the worker cancels the invoice, the sender's keysend settles.
	rec, _ := json.Marshal(tipRecord{Tip: id, From: peer, Request: req.ID})
	pre := [32]byte{7}
	h := sha256.Sum256(pre[:])
	if err := e.onInvoiceUpdate(ctx, ln.settle(&Invoice{PaymentHash: h[:], Keysend: true, AmountPaidMsat: 1_000_000,
		CustomRecords: map[uint64][]byte{RecordTip: rec}})); err != nil {
		t.Fatal(err)
	}
	clock.add(time.Second)
	e.runSteps()
	if got, _ := e.Get(ctx, id); got.State != StateSettled || !got.Keysend {
		t.Fatalf("tip is %s, want settled by keysend", got.Status())
	}
	if inv, _ := ln.LookupInvoice(ctx, mustDecodeHex(t, tip.PaymentHash)); inv.State != InvoiceCanceled {
		t.Fatalf("our invoice of the cancelled tip, then paid by keysend, is %s in LND, want canceled", inv.State)
	}
}
