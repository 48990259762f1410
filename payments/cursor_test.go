package payments

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	"github.com/anchorchat/anchorchat/chat"
)

// Reconcile looks invoices up out of the stream's order, so it must not
// move the cursors the invoice subscription resumes from. It did: after a
// Reconcile had seen a tip invoice settled, a keysend tip that LND had
// settled earlier (while the stream was down) was never replayed to a
// subscription started from the stored cursors, and never counted.
func TestReconcileKeepsStreamCursors(t *testing.T) {
	ctx := context.Background()
	ln, clock := newFakeLN(), &fakeClock{t: time.Unix(1_800_000_000, 0)}
	me, alice, bob := newKey(t).PublicKey(), newKey(t).PublicKey(), newKey(t).PublicKey()
	ch := &fakeChat{me: me}
	e := newFakeEngine(t, ln, ch, clock)

	// The stream has seen LND's first invoice (not a tip).
	first, _ := ln.AddInvoice(ctx, InvoiceRequest{AmountMsat: 5000, Expiry: time.Hour})
	if err := e.onInvoiceUpdate(ctx, first); err != nil {
		t.Fatal(err)
	}
	// The stream goes down. Alice's keysend tip settles, then Bob's
	// invoice is made and paid.
	keysendID := newTipID()
	rec, _ := json.Marshal(tipRecord{Tip: keysendID, From: alice})
	pre := [32]byte{1}
	h := sha256.Sum256(pre[:])
	ln.settle(&Invoice{PaymentHash: h[:], Keysend: true, AmountPaidMsat: 21_000, CustomRecords: map[uint64][]byte{RecordTip: rec}})
	bobID := newTipID()
	e.onMessage(ctx, requestFrom(bob, me, bobID, "1000000"))
	e.runSteps()
	bobTip, err := e.Get(ctx, bobID)
	if err != nil || bobTip.State != StateInvoiced {
		t.Fatalf("bob's tip: %v %v", bobTip, err)
	}
	bh, _ := hex.DecodeString(bobTip.PaymentHash)
	ln.settle(&Invoice{PaymentHash: bh})

	// A reconciliation finds Bob's tip settled...
	if err := e.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if tip, _ := e.Get(ctx, bobID); tip.State != StateSettled {
		t.Fatalf("bob's tip is %s after reconciling, want settled", tip.Status())
	}
	// ... and the stream, resumed from the stored cursors, replays Alice's.
	done := make(chan error, 1)
	go func() { done <- e.subscribeOnce() }()
	eventually(t, 3*time.Second, "alice's keysend tip settled", func() (bool, error) {
		tip, err := getTip(ctx, e.st.db, keysendID, "in", alice)
		if err == ErrNotFound {
			return false, nil
		}
		return err == nil && tip.State == StateSettled && tip.AmountMsat == 21_000, err
	})
	e.flushOutbox(ctx)
	e.cancel()
	<-done
	if st := ch.sentOf(chat.KindTipStatus, keysendID); len(st) != 1 {
		t.Fatalf("alice told %v, want one settled status", st)
	}
}
