package payments

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/lightningnetwork/lnd/lnrpc"
	"github.com/lightningnetwork/lnd/lnrpc/invoicesrpc"
	"github.com/lightningnetwork/lnd/lnrpc/routerrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// LNDConfig says how to reach LND: the node's lnd.rpcserver,
// lnd.tlscertpath and lnd.macaroonpath settings.
type LNDConfig struct {
	RPCServer    string // host:port of LND's gRPC
	TLSCertPath  string // LND's tls.cert
	MacaroonPath string // a macaroon with the permissions of docs/payments.md
	// RPCTimeout bounds each unary call (default 30 s).
	RPCTimeout time.Duration
	// MaxBackoff caps gRPC's reconnect backoff (default 30 s; it starts at
	// 1 s and grows by 1.6x with jitter).
	MaxBackoff time.Duration
	Logger     *slog.Logger
}

// LND is a Lightning client over LND's gRPC (lnrpc, routerrpc,
// invoicesrpc). It is safe for concurrent use. The connection is lazy: an
// LND that is down at start-up is reached when it comes up (gRPC reconnects
// with backoff); errors meanwhile wrap ErrUnavailable.
type LND struct {
	cfg LNDConfig
	log *slog.Logger

	mu       sync.Mutex
	conn     *grpc.ClientConn
	ln       lnrpc.LightningClient
	router   routerrpc.RouterClient
	invoices invoicesrpc.InvoicesClient
}

var _ Lightning = (*LND)(nil)

// NewLND checks the configuration and prepares the client. It does not
// wait for LND: the first call does (and fails with ErrUnavailable while
// LND is down).
func NewLND(cfg LNDConfig) (*LND, error) {
	if cfg.RPCServer == "" || cfg.TLSCertPath == "" || cfg.MacaroonPath == "" {
		return nil, errors.New("payments: lnd.rpcserver, lnd.tlscertpath and lnd.macaroonpath are all required")
	}
	if cfg.RPCTimeout <= 0 {
		cfg.RPCTimeout = 30 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	l := &LND{cfg: cfg, log: cfg.Logger.With("component", "lnd", "rpcserver", cfg.RPCServer)}
	if _, err := l.clients(); err != nil && !errors.Is(err, ErrUnavailable) {
		return nil, err
	}
	return l, nil
}

// macaroonCred is LND's per-RPC credential: metadata "macaroon: hex".
type macaroonCred string

func (m macaroonCred) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"macaroon": string(m)}, nil
}

func (macaroonCred) RequireTransportSecurity() bool { return true }

type lndClients struct {
	ln       lnrpc.LightningClient
	router   routerrpc.RouterClient
	invoices invoicesrpc.InvoicesClient
}

// clients dials on first use (reading the TLS certificate and the
// macaroon then; a missing file is retried at the next call).
func (l *LND) clients() (*lndClients, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		creds, err := credentials.NewClientTLSFromFile(l.cfg.TLSCertPath, "")
		if err != nil {
			return nil, fmt.Errorf("%w: tls cert %s: %w", ErrUnavailable, l.cfg.TLSCertPath, err)
		}
		mac, err := os.ReadFile(l.cfg.MacaroonPath)
		if err != nil {
			return nil, fmt.Errorf("%w: macaroon %s: %w", ErrUnavailable, l.cfg.MacaroonPath, err)
		}
		conn, err := grpc.Dial(l.cfg.RPCServer,
			grpc.WithTransportCredentials(creds),
			grpc.WithPerRPCCredentials(macaroonCred(hex.EncodeToString(mac))),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(50<<20)),
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: l.cfg.MaxBackoff},
				MinConnectTimeout: 5 * time.Second,
			}),
		)
		if err != nil {
			return nil, fmt.Errorf("payments: dial lnd %s: %w", l.cfg.RPCServer, err)
		}
		l.conn = conn
		l.ln = lnrpc.NewLightningClient(conn)
		l.router = routerrpc.NewRouterClient(conn)
		l.invoices = invoicesrpc.NewInvoicesClient(conn)
	}
	return &lndClients{ln: l.ln, router: l.router, invoices: l.invoices}, nil
}

// Reconnect drops the connection; the next call dials again, re-reading the
// TLS certificate and the macaroon (after LND regenerated its certificate,
// or a macaroon was re-baked).
func (l *LND) Reconnect() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		_ = l.conn.Close()
		l.conn = nil
	}
}

// Close closes the connection.
func (l *LND) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return nil
	}
	err := l.conn.Close()
	l.conn = nil
	return err
}

// lndNotReady are the beginnings of what LND answers, with gRPC code
// Unknown, while it is up but cannot serve yet (rpcperms: ErrWaitingToStart,
// ErrNoWallet, ErrWalletLocked, ErrRPCStarting): nothing was done, and the
// same call will work once it is ready.
var lndNotReady = []string{
	"waiting to start, RPC services not available",
	"wallet not created",
	"wallet locked, unlock it",
	"the RPC server is in the process of starting up",
}

// wrapErr marks connection-level failures, and an LND not ready yet, with
// ErrUnavailable.
func wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
	case codes.Unknown:
		msg := status.Convert(err).Message()
		for _, p := range lndNotReady {
			if strings.HasPrefix(msg, p) {
				return fmt.Errorf("%w: %s: LND is not ready: %w", ErrUnavailable, op, err)
			}
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
	}
	return fmt.Errorf("payments: lnd %s: %w", op, err)
}

// lndMessage is what LND said in an error from a call (its gRPC status
// message), without the wrapping.
func lndMessage(err error) string {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) && se.GRPCStatus() != nil {
		return se.GRPCStatus().Message()
	}
	return err.Error()
}

func (l *LND) unary(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, l.cfg.RPCTimeout)
}

// Info is the health call: GetInfo.
func (l *LND) Info(ctx context.Context) (*NodeInfo, error) {
	c, err := l.clients()
	if err != nil {
		return nil, err
	}
	ctx, cancel := l.unary(ctx)
	defer cancel()
	r, err := c.ln.GetInfo(ctx, &lnrpc.GetInfoRequest{})
	if err != nil {
		return nil, wrapErr("getinfo", err)
	}
	return &NodeInfo{
		Pubkey: r.IdentityPubkey, Alias: r.Alias, Version: r.Version, BlockHeight: r.BlockHeight,
		SyncedToChain: r.SyncedToChain, SyncedToGraph: r.SyncedToGraph, ActiveChannels: r.NumActiveChannels,
	}, nil
}

// AddInvoice creates an invoice committing to a description hash.
func (l *LND) AddInvoice(ctx context.Context, req InvoiceRequest) (*Invoice, error) {
	if len(req.DescriptionHash) != 32 {
		return nil, errors.New("payments: description hash must be 32 bytes")
	}
	c, err := l.clients()
	if err != nil {
		return nil, err
	}
	ctx, cancel := l.unary(ctx)
	defer cancel()
	r, err := c.ln.AddInvoice(ctx, &lnrpc.Invoice{
		ValueMsat: req.AmountMsat, DescriptionHash: req.DescriptionHash, Expiry: int64(req.Expiry / time.Second),
	})
	if err != nil {
		return nil, wrapErr("addinvoice", err)
	}
	return &Invoice{PaymentRequest: r.PaymentRequest, PaymentHash: r.RHash, AddIndex: r.AddIndex, State: InvoiceOpen}, nil
}

// CancelInvoice cancels an open invoice (invoicesrpc).
func (l *LND) CancelInvoice(ctx context.Context, paymentHash []byte) error {
	c, err := l.clients()
	if err != nil {
		return err
	}
	ctx, cancel := l.unary(ctx)
	defer cancel()
	_, err = c.invoices.CancelInvoice(ctx, &invoicesrpc.CancelInvoiceMsg{PaymentHash: paymentHash})
	return wrapErr("cancelinvoice", err)
}

// LookupInvoice finds an invoice of ours by payment hash.
func (l *LND) LookupInvoice(ctx context.Context, paymentHash []byte) (*Invoice, error) {
	c, err := l.clients()
	if err != nil {
		return nil, err
	}
	ctx, cancel := l.unary(ctx)
	defer cancel()
	r, err := c.invoices.LookupInvoiceV2(ctx, &invoicesrpc.LookupInvoiceMsg{
		InvoiceRef: &invoicesrpc.LookupInvoiceMsg_PaymentHash{PaymentHash: paymentHash},
	})
	if err != nil {
		if status.Code(err) == codes.NotFound {
			return nil, fmt.Errorf("%w: %w", ErrInvoiceNotFound, err)
		}
		return nil, wrapErr("lookupinvoice", err)
	}
	return invoiceFrom(r), nil
}

func invoiceFrom(r *lnrpc.Invoice) *Invoice {
	inv := &Invoice{
		PaymentRequest: r.PaymentRequest, PaymentHash: r.RHash, AddIndex: r.AddIndex, SettleIndex: r.SettleIndex,
		AmountPaidMsat: r.AmtPaidMsat, Keysend: r.IsKeysend,
	}
	if r.CreationDate > 0 {
		inv.ExpiresAt = time.Unix(r.CreationDate, 0).Add(time.Duration(r.Expiry) * time.Second)
	}
	switch r.State {
	case lnrpc.Invoice_OPEN:
		inv.State = InvoiceOpen
	case lnrpc.Invoice_SETTLED:
		inv.State = InvoiceSettled
		inv.SettledAt = time.Unix(r.SettleDate, 0)
	case lnrpc.Invoice_CANCELED:
		inv.State = InvoiceCanceled
	case lnrpc.Invoice_ACCEPTED:
		inv.State = InvoiceAccepted
	}
	for _, h := range r.Htlcs {
		for k, v := range h.CustomRecords {
			if inv.CustomRecords == nil {
				inv.CustomRecords = map[uint64][]byte{}
			}
			inv.CustomRecords[k] = v
		}
	}
	if len(inv.PaymentHash) == 0 && len(r.RPreimage) == 32 {
		h := sha256.Sum256(r.RPreimage)
		inv.PaymentHash = h[:]
	}
	return inv
}

// DecodePayReq decodes a BOLT-11 invoice with LND.
func (l *LND) DecodePayReq(ctx context.Context, invoice string) (*PayReq, error) {
	c, err := l.clients()
	if err != nil {
		return nil, err
	}
	ctx, cancel := l.unary(ctx)
	defer cancel()
	r, err := c.ln.DecodePayReq(ctx, &lnrpc.PayReqString{PayReq: invoice})
	if err != nil {
		return nil, wrapErr("decodepayreq", err)
	}
	return &PayReq{
		Destination: r.Destination, PaymentHash: r.PaymentHash, AmountMsat: r.NumMsat,
		DescriptionHash: strings.ToLower(r.DescriptionHash), Description: r.Description,
		Timestamp: time.Unix(r.Timestamp, 0), Expiry: time.Duration(r.Expiry) * time.Second,
	}, nil
}

// Pay sends a payment with routerrpc.SendPaymentV2 and reads the stream
// until it is no longer in flight.
func (l *LND) Pay(ctx context.Context, req PaymentRequest) (*Payment, error) {
	if req.FeeLimitMsat <= 0 {
		return nil, errors.New("payments: a fee limit is required")
	}
	if req.Timeout <= 0 {
		req.Timeout = 60 * time.Second
	}
	c, err := l.clients()
	if err != nil {
		return nil, err
	}
	r := &routerrpc.SendPaymentRequest{
		PaymentRequest: req.Invoice, FeeLimitMsat: req.FeeLimitMsat,
		TimeoutSeconds: int32(max(1, req.Timeout/time.Second)), NoInflightUpdates: true,
	}
	if req.Invoice == "" {
		dest, err := hex.DecodeString(req.Dest)
		if err != nil || len(dest) != 33 {
			return nil, fmt.Errorf("payments: bad keysend destination %q", req.Dest)
		}
		if len(req.Preimage) != 32 {
			return nil, errors.New("payments: keysend needs a 32-byte preimage")
		}
		h := sha256.Sum256(req.Preimage)
		recs := map[uint64][]byte{RecordKeysendPreimage: req.Preimage}
		for k, v := range req.CustomRecords {
			recs[k] = v
		}
		r.Dest, r.AmtMsat, r.PaymentHash, r.DestCustomRecords = dest, req.AmountMsat, h[:], recs
	}
	ctx, cancel := context.WithTimeout(ctx, req.Timeout+30*time.Second)
	defer cancel()
	stream, err := c.router.SendPaymentV2(ctx, r)
	if err != nil {
		return nil, wrapErr("sendpayment", err)
	}
	return readPayments(stream.Recv)
}

func readPayments(recv func() (*lnrpc.Payment, error)) (*Payment, error) {
	for {
		p, err := recv()
		if err != nil {
			return nil, wrapErr("payment stream", err)
		}
		out := paymentFrom(p)
		if out.Status != PaymentInFlight {
			return out, nil
		}
	}
}

func paymentFrom(p *lnrpc.Payment) *Payment {
	out := &Payment{PaymentHash: p.PaymentHash, FeeMsat: p.FeeMsat}
	switch p.Status {
	case lnrpc.Payment_SUCCEEDED:
		out.Status = PaymentSucceeded
		out.Preimage, _ = hex.DecodeString(p.PaymentPreimage)
	case lnrpc.Payment_FAILED:
		out.Status = PaymentFailed
		out.NoRoute = p.FailureReason == lnrpc.PaymentFailureReason_FAILURE_REASON_NO_ROUTE
		out.Failure = failureText(p.FailureReason)
	default:
		out.Status = PaymentInFlight
	}
	return out
}

func failureText(r lnrpc.PaymentFailureReason) string {
	switch r {
	case lnrpc.PaymentFailureReason_FAILURE_REASON_NO_ROUTE:
		return "no route to the recipient's node (within the fee limit)"
	case lnrpc.PaymentFailureReason_FAILURE_REASON_TIMEOUT:
		return "payment timed out"
	case lnrpc.PaymentFailureReason_FAILURE_REASON_INCORRECT_PAYMENT_DETAILS:
		return "the recipient's node rejected the payment (unknown or expired invoice, wrong amount)"
	case lnrpc.PaymentFailureReason_FAILURE_REASON_INSUFFICIENT_BALANCE:
		return "insufficient balance in our channels"
	case lnrpc.PaymentFailureReason_FAILURE_REASON_CANCELED:
		return "payment canceled"
	}
	return "payment failed: " + strings.ToLower(strings.TrimPrefix(r.String(), "FAILURE_REASON_"))
}

// TrackPayment follows a payment by hash (routerrpc.TrackPaymentV2).
func (l *LND) TrackPayment(ctx context.Context, paymentHash []byte) (*Payment, error) {
	c, err := l.clients()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.router.TrackPaymentV2(ctx, &routerrpc.TrackPaymentRequest{PaymentHash: paymentHash, NoInflightUpdates: true})
	if err != nil {
		return nil, wrapErr("trackpayment", err)
	}
	p, err := readPayments(stream.Recv)
	if err != nil && status.Code(errors.Unwrap(err)) == codes.NotFound || err != nil && strings.Contains(err.Error(), "not initiated") {
		return &Payment{Status: PaymentUnknown, PaymentHash: hex.EncodeToString(paymentHash)}, nil
	}
	return p, err
}

// SubscribeInvoices streams invoice updates from the given indexes.
func (l *LND) SubscribeInvoices(ctx context.Context, addIndex, settleIndex uint64, fn func(*Invoice) error) error {
	c, err := l.clients()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.ln.SubscribeInvoices(ctx, &lnrpc.InvoiceSubscription{AddIndex: addIndex, SettleIndex: settleIndex})
	if err != nil {
		return wrapErr("subscribeinvoices", err)
	}
	for {
		inv, err := stream.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return wrapErr("invoice stream", err)
		}
		if err := fn(invoiceFrom(inv)); err != nil {
			return err
		}
	}
}
