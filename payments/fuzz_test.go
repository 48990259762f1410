package payments

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/chat"
)

// FuzzTipMessages: a peer sends made-up tip messages (a request, invoice,
// receipt or status, with any tags and content, naming the tip we are
// sending them or not), and the engine's worker runs after each, on a fake
// LND. Whatever the peer says, nothing panics and the engine keeps its
// promises: it pays at most once, only an invoice for our tip's amount that
// commits to our request; an incoming tip above MaxReceiveSat or with an
// over-long memo is refused, and no peer has more than MaxOpenPerPeer
// incoming tips open; every tip is in one of the seven states.
func FuzzTipMessages(f *testing.F) {
	ctx := context.Background()
	ln, clock := newFakeLN(), &fakeClock{t: time.Unix(1_800_000_000, 0)}
	me, peer := newKey(f).PublicKey(), newKey(f).PublicKey()
	ch := &fakeChat{me: me, contacts: map[string]*chat.Contact{"@bob": {PubKey: peer}}}
	e := newFakeEngine(f, ln, ch, clock)
	out, err := e.Tip(ctx, TipRequest{To: "@bob", AmountSat: 1000, Mode: ModeInvoice})
	if err != nil {
		f.Fatal(err)
	}
	e.runSteps()
	sent, err := e.Get(ctx, out.ID)
	if err != nil || sent.RequestID == "" {
		f.Fatalf("our tip after sending its request: %+v, %v", sent, err)
	}
	// What the peer may name in an invoice: one for our tip, and two that
	// must never be paid.
	hash := strings.Repeat("ab", 32)
	ln.payReqs["lnbcrt10u1good"] = &PayReq{Destination: ln.node, PaymentHash: hash, AmountMsat: 1_000_000, DescriptionHash: sent.RequestID, Timestamp: clock.now(), Expiry: time.Hour}
	ln.payReqs["lnbcrt20u1more"] = &PayReq{Destination: ln.node, PaymentHash: hash, AmountMsat: 2_000_000, DescriptionHash: sent.RequestID, Timestamp: clock.now(), Expiry: time.Hour}
	ln.payReqs["lnbcrt10u1other"] = &PayReq{Destination: ln.node, PaymentHash: hash, AmountMsat: 1_000_000, DescriptionHash: strings.Repeat("cd", 32), Timestamp: clock.now(), Expiry: time.Hour}

	add := func(kind int, ours bool, tags nostr.Tags, content string) {
		b, _ := json.Marshal(tags)
		f.Add(uint8(kind-chat.KindTipRequest), ours, string(b), content)
	}
	for _, bolt11 := range []string{"lnbcrt20u1more", "lnbcrt10u1other", "lnbcrt10u1good"} {
		add(chat.KindTipInvoice, true, nostr.Tags{{"e", sent.RequestID}, {"bolt11", bolt11}}, "")
	}
	add(chat.KindTipRequest, false, nostr.Tags{{"tip", strings.Repeat("1", 32)}, {"amount", "5000"}}, "thanks")
	add(chat.KindTipRequest, false, nostr.Tags{{"tip", strings.Repeat("2", 32)}, {"amount", "99999999999999"}}, "")
	add(chat.KindTipRequest, false, nostr.Tags{{"tip", strings.Repeat("3", 32)}, {"amount", "1000"}}, strings.Repeat("m", MaxMemoBytes+1))
	add(chat.KindTipReceipt, true, nostr.Tags{{"preimage", strings.Repeat("00", 32)}, {"payment_hash", hash}}, "")
	add(chat.KindTipStatus, true, nostr.Tags{{"state", "settled"}}, "")
	add(chat.KindTipStatus, false, nostr.Tags{{"tip", strings.Repeat("1", 32)}, {"state", "cancelled"}}, "no")
	add(chat.KindTipRequest, false, nostr.Tags{{"tip"}, {"amount"}, {}}, "")

	n := 0
	f.Fuzz(func(t *testing.T, kind uint8, ours bool, tagsJSON, content string) {
		var tags nostr.Tags
		if err := json.Unmarshal([]byte(tagsJSON), &tags); err != nil {
			t.Skip()
		}
		if ours {
			tags = append(nostr.Tags{{"tip", out.ID}}, tags...)
		}
		n++
		m := &chat.Message{ID: strings.Repeat("0", 56) + fmtHex8(n), Conversation: chat.ConversationID([]string{me, peer}), Sender: peer,
			Kind: chat.KindTipRequest + int(kind%4), Content: content, Tags: tags, CreatedAt: clock.now()}
		e.onMessage(ctx, m)
		e.runSteps()

		ln.mu.Lock()
		paid := append([]PaymentRequest(nil), ln.paid...)
		ln.mu.Unlock()
		if len(paid) > 1 || len(paid) == 1 && paid[0].Invoice != "lnbcrt10u1good" {
			t.Fatalf("paid %+v: want at most one payment, of the invoice for our tip", paid)
		}
		tips, err := e.List(ctx, ListOptions{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		open := 0
		for _, tp := range tips {
			switch tp.State {
			case StateRequested, StateInvoiced, StatePaying, StatePaid, StateSettled, StateFailed, StateCancelled:
			default:
				t.Fatalf("tip %s in state %q", tp.ID, tp.State)
			}
			if tp.Outgoing {
				if tp.ID != out.ID {
					t.Fatalf("an outgoing tip %s we never sent", tp.ID)
				}
				continue
			}
			if tp.State == StateRequested || tp.State == StateInvoiced {
				open++
			}
			if tp.State != StateFailed && tp.State != StateCancelled && (tp.AmountMsat > e.cfg.MaxReceiveSat*1000 || len(tp.Memo) > MaxMemoBytes) {
				t.Fatalf("incoming tip %s accepted: %d msat, %d-byte memo", tp.ID, tp.AmountMsat, len(tp.Memo))
			}
		}
		if open > MaxOpenPerPeer {
			t.Fatalf("%d incoming tips open from one peer, at most %d", open, MaxOpenPerPeer)
		}
	})
}

func fmtHex8(n int) string {
	const digits = "0123456789abcdef"
	b := make([]byte, 8)
	for i := 7; i >= 0; i-- {
		b[i] = digits[n&15]
		n >>= 4
	}
	return string(b)
}
