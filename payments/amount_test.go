package payments

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/anchorchat/anchorchat/chat"
)

// An amount in sat whose millisatoshis do not fit in an int64 is refused.
// It was multiplied by 1000 unchecked, and wrapped around to a small
// positive amount that passed every limit: asked to tip 18446744073709552
// sat (or -18446744073709551), the engine requested and would have paid
// 384 msat (616 msat).
func TestTipAmountOverflowRefused(t *testing.T) {
	ctx := context.Background()
	ln, clock := newFakeLN(), &fakeClock{t: time.Unix(1_800_000_000, 0)}
	me, peer := newKey(t).PublicKey(), newKey(t).PublicKey()
	ch := &fakeChat{me: me, contacts: map[string]*chat.Contact{"@bob": {PubKey: peer}}}
	e := newFakeEngine(t, ln, ch, clock)
	for _, sat := range []int64{18446744073709552, -18446744073709551, math.MaxInt64, math.MinInt64, math.MaxInt64/1000 + 1} {
		tip, err := e.Tip(ctx, TipRequest{To: "@bob", AmountSat: sat, Mode: ModeInvoice})
		if err == nil {
			t.Errorf("tip of %d sat accepted as %s", sat, fmtMsat(tip.AmountMsat))
		}
	}
	if n := len(ch.sent); n != 0 {
		t.Fatalf("%d tip requests sent, want none", n)
	}
}
