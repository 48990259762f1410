package payments

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/anchorchat/anchorchat/chat"
)

// A payment that LND refuses before starting it (here the invoice expired
// while LND was away, after the tip had moved to paying) ends the tip
// failed, and the recipient is told. It used to stay paying forever: each
// retry asked TrackPayment (LND never saw the payment), sent it again and
// was refused again, and a paying tip cannot be cancelled.
func TestRefusedPaymentFails(t *testing.T) {
	ctx := context.Background()
	ln, clock := newFakeLN(), &fakeClock{t: time.Unix(1_800_000_000, 0)}
	me, peer := newKey(t).PublicKey(), newKey(t).PublicKey()
	ch := &fakeChat{me: me, contacts: map[string]*chat.Contact{"@bob": {PubKey: peer, LNNode: ln.node}}}
	e := newFakeEngine(t, ln, ch, clock)

	tip, err := e.Tip(ctx, TipRequest{To: "@bob", AmountSat: 1000, Mode: ModeInvoice})
	if err != nil {
		t.Fatal(err)
	}
	if tip.RequestID == "" {
		t.Fatal("request not sent")
	}
	hash := strings.Repeat("ee", 32)
	ln.payReqs["lnbcrt1"] = &PayReq{Destination: ln.node, PaymentHash: hash, AmountMsat: 1_000_000,
		DescriptionHash: tip.RequestID, Timestamp: clock.now(), Expiry: time.Hour}
	e.onMessage(ctx, &chat.Message{ID: strings.Repeat("1f", 32), Sender: peer, Kind: chat.KindTipInvoice,
		Tags: nostr.Tags{{"p", me}, {"tip", tip.ID}, {"e", tip.RequestID}, {"amount", "1000000"}, {"bolt11", "lnbcrt1"}}})
	// LND answers the payment with a refusal (what SendPaymentV2 says of
	// an invoice that expired), and never records it.
	ln.payErr = wrapErr("payment stream", status.Error(codes.Unknown, "invoice expired. Valid until 2027-01-15 08:00:00 +0000 UTC"))

	for range 10 {
		e.runSteps()
		clock.add(time.Second)
	}
	got, err := e.Get(ctx, tip.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != StateFailed || !strings.Contains(got.Reason, "invoice expired") {
		t.Fatalf("tip is %s after %d refused payments; want failed, saying why", got.Status(), ln.pays)
	}
	if ln.pays != 1 {
		t.Errorf("LND asked to pay %d times, want 1", ln.pays)
	}
	st := ch.sentOf(chat.KindTipStatus, tip.ID)
	if len(st) != 1 || tag(st[0].Tags, "state") != string(StateFailed) {
		t.Fatalf("recipient told %v, want one failed status", st)
	}
}
