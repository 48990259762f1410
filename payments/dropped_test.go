package payments

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/anchorchat/anchorchat/chat"
)

// A tip whose request could not be handed to the chat service for a day
// (the request is then dropped from the outbox) ends failed, saying why:
// nothing was paid, and nothing will be. It used to stay requested for
// ever, shown as retrying: without a sent request there is no keysend and
// no giving up after AnswerWait.
func TestDroppedRequestEndsTip(t *testing.T) {
	ctx := context.Background()
	ln, clock := newFakeLN(), &fakeClock{t: time.Unix(1_800_000_000, 0)}
	me, peer := newKey(t).PublicKey(), newKey(t).PublicKey()
	ch := &fakeChat{me: me, contacts: map[string]*chat.Contact{"@bob": {PubKey: peer, LNNode: ln.node}},
		sendErr: errors.New("no DM relay known for the recipient")}
	e := newFakeEngine(t, ln, ch, clock)
	var ids []string
	for _, mode := range []Mode{ModeInvoice, ModeAuto, ModeKeysend} {
		tip, err := e.Tip(ctx, TipRequest{To: "@bob", AmountSat: 1000, Mode: mode})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tip.ID)
	}
	for range 3 {
		clock.add(outboxGiveUp / 2)
		e.runSteps()
	}
	clock.add(e.cfg.AnswerWait)
	e.runSteps()
	for _, id := range ids {
		tip, err := e.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if tip.State != StateFailed || !strings.Contains(tip.Reason, "no DM relay known") {
			t.Errorf("tip %s (%s) is %s; want failed, saying its request was not sent", id, tip.Mode, tip.Status())
		}
	}
	if ln.pays != 0 {
		t.Fatalf("LND asked to pay %d times, want 0", ln.pays)
	}
}
