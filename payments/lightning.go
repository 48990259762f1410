// Package payments tips contacts over Lightning inside NIP-17
// conversations: an LND client (LND) and the tip protocol engine (Engine).
// See docs/payments.md and docs/protocol.md ("Tip messages").
package payments

import (
	"context"
	"errors"
	"time"
)

// Keysend and tip TLV record types (custom records must be >= 65536).
const (
	// RecordKeysendPreimage carries the preimage of a keysend payment.
	RecordKeysendPreimage uint64 = 5482373484
	// RecordTip carries {"tip": id, "from": sender pubkey, "request":
	// request rumor id} as JSON in a keysend tip.
	RecordTip uint64 = 0x616e6368 // "anch", 1634624360
)

// ErrUnavailable wraps every error that means LND could not be reached
// (connection refused, TLS, timeout): the operation may be retried later.
var ErrUnavailable = errors.New("payments: LND unreachable")

// ErrInvoiceNotFound: LND has no such invoice (LookupInvoice); LND deletes
// cancelled invoices when told to (gc-canceled-invoices-on-the-fly).
var ErrInvoiceNotFound = errors.New("payments: LND knows no such invoice")

// NodeInfo is LND's health.
type NodeInfo struct {
	Pubkey         string
	Alias          string
	Version        string
	BlockHeight    uint32
	SyncedToChain  bool
	SyncedToGraph  bool
	ActiveChannels uint32
}

// InvoiceRequest is an invoice to create.
type InvoiceRequest struct {
	AmountMsat      int64
	DescriptionHash []byte // 32 bytes
	Expiry          time.Duration
}

// Invoice is an invoice of our node.
type Invoice struct {
	PaymentRequest string
	PaymentHash    []byte
	AddIndex       uint64
	SettleIndex    uint64
	State          InvoiceState
	AmountPaidMsat int64
	SettledAt      time.Time
	// ExpiresAt is when an open invoice stops being payable (zero if
	// unknown); LND then cancels it.
	ExpiresAt time.Time
	Keysend   bool
	// CustomRecords are the custom TLV records of the settling HTLCs.
	CustomRecords map[uint64][]byte
}

// InvoiceState of an invoice.
type InvoiceState string

// Invoice states (LND's).
const (
	InvoiceOpen      InvoiceState = "open"
	InvoiceSettled   InvoiceState = "settled"
	InvoiceCanceled  InvoiceState = "canceled"
	InvoiceAccepted  InvoiceState = "accepted"
	InvoiceStateNone InvoiceState = ""
)

// PayReq is a decoded BOLT-11 invoice.
type PayReq struct {
	Destination     string // hex node pubkey
	PaymentHash     string // hex
	AmountMsat      int64
	DescriptionHash string // hex, "" if none
	Description     string
	Timestamp       time.Time
	Expiry          time.Duration
}

// ExpiresAt is when the invoice stops being payable.
func (p *PayReq) ExpiresAt() time.Time { return p.Timestamp.Add(p.Expiry) }

// PaymentRequest is a payment to send: either an invoice, or a keysend
// (Dest + AmountMsat + Preimage + CustomRecords).
type PaymentRequest struct {
	Invoice string

	Dest          string // hex node pubkey (keysend)
	AmountMsat    int64  // keysend amount
	Preimage      []byte // keysend preimage (its hash is the payment hash)
	CustomRecords map[uint64][]byte

	FeeLimitMsat int64
	Timeout      time.Duration
}

// PaymentStatus is a payment's final or current state.
type PaymentStatus string

// Payment statuses.
const (
	PaymentInFlight  PaymentStatus = "in_flight"
	PaymentSucceeded PaymentStatus = "succeeded"
	PaymentFailed    PaymentStatus = "failed"
	PaymentUnknown   PaymentStatus = "unknown" // LND does not know the payment
)

// Payment is the result of a payment.
type Payment struct {
	Status      PaymentStatus
	PaymentHash string // hex
	Preimage    []byte // when succeeded
	FeeMsat     int64
	// Failure is LND's failure reason in words when failed.
	Failure string
	// NoRoute is set when the failure was that no route was found.
	NoRoute bool
}

// Lightning is what the engine needs from a Lightning node; LND implements
// it, tests use a fake.
type Lightning interface {
	Info(ctx context.Context) (*NodeInfo, error)
	AddInvoice(ctx context.Context, req InvoiceRequest) (*Invoice, error)
	CancelInvoice(ctx context.Context, paymentHash []byte) error
	LookupInvoice(ctx context.Context, paymentHash []byte) (*Invoice, error)
	DecodePayReq(ctx context.Context, invoice string) (*PayReq, error)
	// Pay sends a payment and waits until it is no longer in flight (or
	// ctx ends). An error means the outcome is unknown: ask TrackPayment.
	Pay(ctx context.Context, req PaymentRequest) (*Payment, error)
	// TrackPayment returns the state of a payment by hash; PaymentUnknown
	// if LND never saw it. It waits while the payment is in flight.
	TrackPayment(ctx context.Context, paymentHash []byte) (*Payment, error)
	// SubscribeInvoices streams invoice updates added after addIndex or
	// settled after settleIndex (replaying what was missed) until ctx ends
	// or the stream breaks.
	SubscribeInvoices(ctx context.Context, addIndex, settleIndex uint64, fn func(*Invoice) error) error
}
