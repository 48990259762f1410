package payments

import (
	"context"
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
