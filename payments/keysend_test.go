package payments

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/chat"
)

// A keysend tip that LND settled while the engine had never seen an invoice
// update (a new node: both stream cursors 0, from which LND replays
// nothing) is found when its receipt arrives: the receipt's preimage names
// the payment, which LND is asked about. It used to be lost: the request
// got an invoice of its own, the receipt did not match that invoice's hash
// and was dropped, and the tip stayed invoiced although it was paid.
func TestKeysendFoundByReceipt(t *testing.T) {
	ctx := context.Background()
	ln, clock := newFakeLN(), &fakeClock{t: time.Now()}
	me, alice := newKey(t).PublicKey(), newKey(t).PublicKey()
	ch := &fakeChat{me: me}
	e := newFakeEngine(t, ln, ch, clock)

	// While our node was offline, Alice's keysend settled in LND.
	id := newTipID()
	req := requestFrom(alice, me, id, "21000")
	rec, _ := json.Marshal(tipRecord{Tip: id, From: alice, Request: req.ID})
	pre := [32]byte{7}
	h := sha256.Sum256(pre[:])
	ln.settle(&Invoice{PaymentHash: h[:], Keysend: true, AmountPaidMsat: 21_000, CustomRecords: map[uint64][]byte{RecordTip: rec}})

	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Then her request and her receipt arrive.
	e.onMessage(ctx, req)
	eventually(t, 3*time.Second, "the request invoiced", func() (bool, error) {
		tip, err := e.Get(ctx, id)
		return err == nil && tip.State == StateInvoiced, nil
	})
	e.onMessage(ctx, &chat.Message{ID: randHex(32), Sender: alice, Kind: chat.KindTipReceipt, Conversation: req.Conversation,
		Tags: nostr.Tags{{"p", me}, {"tip", id}, {"amount", "21000"}, {"preimage", hex.EncodeToString(pre[:])},
			{"payment_hash", hex.EncodeToString(h[:])}, {"keysend", "1"}}})
	eventually(t, 3*time.Second, "the keysend tip settled with its receipt", func() (bool, error) {
		tip, err := e.Get(ctx, id)
		return err == nil && tip.State == StateSettled && tip.ReceiptReceived && tip.AmountMsat == 21_000, nil
	})
	eventually(t, 3*time.Second, "alice told it settled", func() (bool, error) {
		st := ch.sentOf(chat.KindTipStatus, id)
		return len(st) == 1 && tag(st[0].Tags, "state") == string(StateSettled), nil
	})
}
