package payments

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/chat"
)

// ErrNotFound: no such tip.
var ErrNotFound = errors.New("payments: tip not found")

// State of a tip. Outgoing: requested → invoiced → paying → paid →
// settled; incoming: requested → invoiced → (paid: receipt seen) →
// settled. Any non-final state may end in failed or cancelled.
type State string

// Tip states.
const (
	StateRequested State = "requested" // request sent (out) / received (in)
	StateInvoiced  State = "invoiced"  // invoice received (out) / created and sent (in)
	StatePaying    State = "paying"    // our LND is paying (out)
	StatePaid      State = "paid"      // out: LND reported success, preimage known; in: receipt seen, LND not yet settled
	StateSettled   State = "settled"   // in: our LND settled the invoice; out: the recipient confirmed it
	StateFailed    State = "failed"    // see Reason; nothing was paid
	StateCancelled State = "cancelled" // cancelled by a user before paying
)

// Final reports whether no further change is expected.
func (s State) Final() bool {
	return s == StateSettled || s == StateFailed || s == StateCancelled
}

// Mode chooses how an outgoing tip is paid.
type Mode string

// Payment modes.
const (
	// ModeAuto: ask for an invoice; if none arrives within
	// Config.InvoiceWait and the recipient's claim names an LND node,
	// keysend to it.
	ModeAuto Mode = "auto"
	// ModeInvoice: only ever pay an invoice of the recipient's node.
	ModeInvoice Mode = "invoice"
	// ModeKeysend: pay at once by keysend to the claim's LND node (the
	// recipient's anchorchat node may be offline).
	ModeKeysend Mode = "keysend"
)

// Tip is one tip, sent or received, as stored.
type Tip struct {
	ID           string // 32 hex, chosen by the sender
	Outgoing     bool
	Peer         string // hex pubkey of the other side
	Conversation string // chat conversation id
	AmountMsat   int64
	Memo         string
	State        State
	// Reason says why the tip failed or was cancelled ("refused: the
	// invoice asks for 2000 sat, the tip is 1000 sat", "no route ...").
	Reason string
	// LastError is the current transient problem of a pending tip (LND
	// unreachable); it is retried. Empty when all is well.
	LastError        string
	Mode             Mode
	PeerLNNode       string // the LND node the recipient's claim names, if any
	RequestID        string // request rumor id (= the invoice's description hash)
	InvoiceMessageID string
	Invoice          string // BOLT-11
	PaymentHash      string // hex
	Preimage         string // hex; only once paid or settled
	FeeMsat          int64
	Keysend          bool
	// ReceiptReceived: incoming, the sender's receipt arrived and its
	// preimage matches; outgoing, the recipient confirmed settlement.
	ReceiptReceived bool
	CreatedAt       time.Time
	UpdatedAt       time.Time
	PayingAt        time.Time
	DoneAt          time.Time // paid (out) or settled

	attempts      int
	nextMs        int64
	preimage      string
	cancelInvoice bool
	cancelHash    string // the invoice cancelInvoice cancels, if not PaymentHash's
}

// AmountSat is the amount in satoshis (rounded down).
func (t *Tip) AmountSat() int64 { return t.AmountMsat / 1000 }

// Status renders the state for people: "settled", "paying (LND
// unreachable: …; retrying)", "failed: no route …".
func (t *Tip) Status() string {
	s := string(t.State)
	if t.Reason != "" {
		s += ": " + t.Reason
	}
	if t.LastError != "" && !t.State.Final() {
		s += " (" + t.LastError + "; retrying)"
	}
	return s
}

// Messenger is what the engine needs from the chat service
// (*chat.Service implements it).
type Messenger interface {
	PublicKey() string
	Resolve(ctx context.Context, addr string) (*chat.Contact, error)
	SendRumor(ctx context.Context, recipients []string, kind int, content string, tags nostr.Tags, opts chat.SendOptions) (*chat.Message, error)
	Handle(kind int, fn func(ctx context.Context, m *chat.Message))
	TipMessages(ctx context.Context, since time.Time) ([]*chat.Message, error)
	Message(ctx context.Context, id string) (*chat.Message, error)
}

var _ Messenger = (*chat.Service)(nil)

// tipRecord is the JSON of the RecordTip keysend record.
type tipRecord struct {
	Tip     string `json:"tip"`
	From    string `json:"from"`
	Request string `json:"request,omitempty"`
}

func newTipID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func tag(tags nostr.Tags, name string) string {
	t := tags.Find(name)
	if len(t) < 2 {
		return ""
	}
	return t[1]
}

// parseAmount reads the "amount" tag: msat, a positive decimal integer.
func parseAmount(tags nostr.Tags) (int64, error) {
	v := tag(tags, "amount")
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 || strconv.FormatInt(n, 10) != v {
		return 0, fmt.Errorf("bad amount %q", v)
	}
	return n, nil
}

func fmtMsat(msat int64) string {
	if msat%1000 == 0 {
		return fmt.Sprintf("%d sat", msat/1000)
	}
	return fmt.Sprintf("%d msat", msat)
}
