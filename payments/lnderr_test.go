package payments

import (
	"errors"
	"testing"

	"github.com/lightningnetwork/lnd/rpcperms"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// LND up but not ready (starting, wallet locked or not created) answers
// every call with code Unknown and one of rpcperms' messages: that is
// ErrUnavailable (retried, the tip keeps its state), not a refusal. A
// payment refused that way used to end its tip failed although a retry a
// moment later would have paid it.
func TestLNDNotReadyIsUnavailable(t *testing.T) {
	for _, e := range []error{rpcperms.ErrWaitingToStart, rpcperms.ErrNoWallet, rpcperms.ErrWalletLocked, rpcperms.ErrRPCStarting} {
		if err := wrapErr("sendpayment", status.Error(codes.Unknown, e.Error())); !errors.Is(err, ErrUnavailable) {
			t.Errorf("%q: %v, want ErrUnavailable", e, err)
		}
	}
	for _, msg := range []string{"invoice expired. Valid until 12:00", "invoice is already paid", "self-payments not allowed"} {
		if err := wrapErr("sendpayment", status.Error(codes.Unknown, msg)); errors.Is(err, ErrUnavailable) {
			t.Errorf("%q counted as unavailable", msg)
		}
	}
}
