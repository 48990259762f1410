package payments

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/chat"
	"github.com/anchorchat/anchorchat/internal/hub"
)

// A keysend's receipt (sent in chat) and its settlement (from LND) reach the
// recipient in either order, or at once: however they interleave, the tip
// ends up settled with its receipt counted. A receipt that found no payment
// hash used to be kept only after the settlement had looked for it, and
// was then never counted.
func TestReceiptRacingKeysendSettlement(t *testing.T) {
	st, err := openStore(context.Background(), filepath.Join(t.TempDir(), "payments.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.db.Close() })
	me, peer := newKey(t).PublicKey(), newKey(t).PublicKey()
	e := &Engine{me: me, st: st, log: testLogger(t), now: time.Now,
		wake: make(chan struct{}, 1), active: map[string]bool{}, watch: hub.New[*Tip](256)}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	t.Cleanup(e.cancel)
	ctx := context.Background()

	const tips = 200
	for i := range tips {
		id := newTipID()
		var pre [32]byte
		_, _ = rand.Read(pre[:])
		hash := sha256.Sum256(pre[:])
		rec, _ := json.Marshal(tipRecord{Tip: id, From: peer})
		settled := &Invoice{PaymentHash: hash[:], State: InvoiceSettled, Keysend: true, AmountPaidMsat: 1000,
			AddIndex: uint64(i + 1), SettleIndex: uint64(i + 1), CustomRecords: map[uint64][]byte{RecordTip: rec}}
		receipt := &chat.Message{ID: fmt.Sprint("receipt ", i), Sender: peer, Kind: chat.KindTipReceipt,
			Tags: nostr.Tags{{"tip", id}, {"preimage", hex.EncodeToString(pre[:])}}}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		wg.Go(func() { errs[0] = e.onReceipt(ctx, id, receipt) })
		wg.Go(func() { errs[1] = e.onInvoiceUpdate(ctx, settled) })
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatalf("tip %d: %v", i, err)
			}
		}
		tip, err := getTip(ctx, st.db, id, "in", peer)
		if err != nil {
			t.Fatalf("tip %d: %v", i, err)
		}
		if tip.State != StateSettled || !tip.ReceiptReceived {
			t.Fatalf("tip %d of %d: state %s, receipt counted %v; want settled with its receipt", i, tips, tip.State, tip.ReceiptReceived)
		}
	}
}
