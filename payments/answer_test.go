package payments

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/anchorchat/anchorchat/chat"
)

// A tip we sent whose recipient never answers with an invoice, with no
// keysend to fall back on (ModeInvoice, or ModeAuto when their claim names
// no LND node), ends failed after AnswerWait and the recipient is told, so
// an invoice their node makes later is cancelled there. It used to wait in
// requested for ever.
func TestUnansweredTipEndsFailed(t *testing.T) {
	ctx := context.Background()
	ln, clock := newFakeLN(), &fakeClock{t: time.Unix(1_800_000_000, 0)}
	me, peer := newKey(t).PublicKey(), newKey(t).PublicKey()
	ch := &fakeChat{me: me, contacts: map[string]*chat.Contact{"@bob": {PubKey: peer}}}
	e := newFakeEngine(t, ln, ch, clock)
	var ids []string
	for _, mode := range []Mode{ModeInvoice, ModeAuto} {
		tip, err := e.Tip(ctx, TipRequest{To: "@bob", AmountSat: 1000, Mode: mode})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tip.ID)
	}
	e.runSteps()
	check := func(want State) {
		t.Helper()
		for _, id := range ids {
			tip, err := e.Get(ctx, id)
			if err != nil || tip.State != want {
				t.Fatalf("tip %s: %v %v, want %s", id, tip, err, want)
			}
		}
	}
	clock.add(e.cfg.AnswerWait - time.Minute)
	e.runSteps()
	check(StateRequested)
	clock.add(time.Minute)
	e.runSteps()
	check(StateFailed)
	for _, id := range ids {
		tip, _ := e.Get(ctx, id)
		if !strings.Contains(tip.Reason, "no invoice from the recipient within 24h") {
			t.Errorf("reason %q", tip.Reason)
		}
		sent := ch.sentOf(chat.KindTipStatus, id)
		if len(sent) != 1 || sent[0].Tags.Find("state")[1] != string(StateFailed) {
			t.Errorf("tip %s: %d status messages to the recipient, want one saying failed", id, len(sent))
		}
	}
}
