package payments

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/lightningnetwork/lnd/lnrpc"
	"github.com/lightningnetwork/lnd/lnrpc/routerrpc"
)

func pct(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p*float64(len(s)-1) + 0.5)
	return s[i]
}

// benchTips measures n tips alice → bob end to end (Tip call → settled at
// both nodes), then n raw LND invoice payments on the same channel (bob
// AddInvoice + alice SendPaymentV2 until SUCCEEDED).
func benchTips(t *testing.T, e *tenv, n int) {
	ctx := context.Background()
	alice, bob := e.users["alice"], e.users["bob"]
	var tips, raw []time.Duration
	for i := range n {
		start := time.Now()
		tip, err := alice.eng.Tip(ctx, TipRequest{To: "@" + bob.handle, AmountSat: 100 + int64(i), Memo: "bench"})
		if err != nil {
			t.Fatal(err)
		}
		waitState(t, alice.eng, tip.ID, StateSettled, time.Minute)
		waitState(t, bob.eng, tip.ID, StateSettled, time.Minute)
		tips = append(tips, time.Since(start))
	}
	for i := range n {
		start := time.Now()
		inv, err := e.n.LNDs[1].Client.AddInvoice(ctx, &lnrpc.Invoice{Value: 100 + int64(i)})
		if err != nil {
			t.Fatal(err)
		}
		stream, err := e.n.LNDs[0].Router.SendPaymentV2(ctx, &routerrpc.SendPaymentRequest{PaymentRequest: inv.PaymentRequest, FeeLimitSat: 10, TimeoutSeconds: 30})
		if err != nil {
			t.Fatal(err)
		}
		for {
			p, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if p.Status == lnrpc.Payment_SUCCEEDED {
				break
			}
			if p.Status == lnrpc.Payment_FAILED {
				t.Fatal(p.FailureReason)
			}
		}
		raw = append(raw, time.Since(start))
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
	out := fmt.Sprintf("| end-to-end tip (Tip → settled at both nodes) | %d | %s | %s | %s |\n| raw LND (AddInvoice + SendPaymentV2 → SUCCEEDED) | %d | %s | %s | %s |\n",
		n, ms(pct(tips, 0.5)), ms(pct(tips, 0.95)), ms(slices.Max(tips)), n, ms(pct(raw, 0.5)), ms(pct(raw, 0.95)), ms(slices.Max(raw)))
	t.Log("\n" + out)
	if f := os.Getenv("TIP_BENCH_OUT"); f != "" {
		_ = os.WriteFile(f, []byte(out), 0o644)
	}
}
