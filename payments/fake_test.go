package payments

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/chat"
)

// fakeLN is an in-memory Lightning: invoices by payment hash with LND's
// add and settle indexes, and payments whose outcome a test chooses.
type fakeLN struct {
	mu       sync.Mutex
	node     string
	invoices map[string]*Invoice // by hex payment hash
	addIdx   uint64
	setIdx   uint64
	payReqs  map[string]*PayReq // bolt11 → decoded

	// payErr, if set, is what Pay answers (LND refusing the payment before
	// it started); pays counts Pay calls.
	payErr error
	pays   int
	paid   []PaymentRequest // every Pay call's request
	// tracked is what TrackPayment answers by hash (PaymentUnknown if
	// missing).
	tracked map[string]*Payment

	// updates feeds SubscribeInvoices' live stream.
	updates chan *Invoice
	// now is LND's clock (newFakeEngine sets the engine's).
	now func() time.Time
}

func newFakeLN() *fakeLN {
	return &fakeLN{node: "02" + strings.Repeat("11", 32), invoices: map[string]*Invoice{}, payReqs: map[string]*PayReq{},
		tracked: map[string]*Payment{}, updates: make(chan *Invoice, 16), now: time.Now}
}

func (l *fakeLN) Info(context.Context) (*NodeInfo, error) {
	return &NodeInfo{Pubkey: l.node, SyncedToChain: true, SyncedToGraph: true, ActiveChannels: 1}, nil
}

func (l *fakeLN) AddInvoice(_ context.Context, req InvoiceRequest) (*Invoice, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var pre [32]byte
	_, _ = rand.Read(pre[:])
	h := sha256.Sum256(pre[:])
	l.addIdx++
	inv := &Invoice{PaymentRequest: "lnbcrt" + hex.EncodeToString(h[:8]), PaymentHash: h[:], AddIndex: l.addIdx, State: InvoiceOpen,
		ExpiresAt: l.now().Add(req.Expiry)}
	l.invoices[hex.EncodeToString(h[:])] = inv
	c := *inv
	return &c, nil
}

func (l *fakeLN) CancelInvoice(_ context.Context, hash []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	inv := l.invoices[hex.EncodeToString(hash)]
	if inv == nil {
		return errors.New("unable to locate invoice")
	}
	if inv.State == InvoiceSettled {
		return errors.New("invoice already settled")
	}
	inv.State = InvoiceCanceled
	return nil
}

func (l *fakeLN) LookupInvoice(_ context.Context, hash []byte) (*Invoice, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	inv := l.invoices[hex.EncodeToString(hash)]
	if inv == nil {
		return nil, fmt.Errorf("%w: unable to locate invoice", ErrInvoiceNotFound)
	}
	c := *inv
	return &c, nil
}

// settle settles an invoice of ours (or adds a settled keysend) and returns
// the update LND would stream.
func (l *fakeLN) settle(inv *Invoice) *Invoice {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := hex.EncodeToString(inv.PaymentHash)
	if old := l.invoices[h]; old != nil {
		inv = old
	} else {
		l.addIdx++
		inv.AddIndex = l.addIdx
		l.invoices[h] = inv
	}
	l.setIdx++
	inv.State, inv.SettleIndex = InvoiceSettled, l.setIdx
	c := *inv
	return &c
}

func (l *fakeLN) DecodePayReq(_ context.Context, invoice string) (*PayReq, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	pr := l.payReqs[invoice]
	if pr == nil {
		return nil, errors.New("invalid payment request")
	}
	c := *pr
	return &c, nil
}

func (l *fakeLN) Pay(_ context.Context, req PaymentRequest) (*Payment, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pays++
	l.paid = append(l.paid, req)
	if l.payErr != nil {
		return nil, l.payErr
	}
	return nil, errors.New("fakeLN: no payment outcome set")
}

func (l *fakeLN) TrackPayment(_ context.Context, hash []byte) (*Payment, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p := l.tracked[hex.EncodeToString(hash)]; p != nil {
		c := *p
		return &c, nil
	}
	return &Payment{Status: PaymentUnknown, PaymentHash: hex.EncodeToString(hash)}, nil
}

// SubscribeInvoices replays as LND does (invoices added after addIndex,
// then those settled after settleIndex; an index of 0 replays nothing),
// then streams l.updates.
func (l *fakeLN) SubscribeInvoices(ctx context.Context, addIndex, settleIndex uint64, fn func(*Invoice) error) error {
	l.mu.Lock()
	var backlog []*Invoice
	for i := uint64(1); addIndex > 0 && i <= l.addIdx; i++ {
		for _, inv := range l.invoices {
			if inv.AddIndex == i && i > addIndex && (inv.State == InvoiceOpen || inv.State == InvoiceSettled) {
				c := *inv
				backlog = append(backlog, &c)
			}
		}
	}
	for i := uint64(1); settleIndex > 0 && i <= l.setIdx; i++ {
		for _, inv := range l.invoices {
			if inv.SettleIndex == i && i > settleIndex && inv.State == InvoiceSettled {
				c := *inv
				backlog = append(backlog, &c)
			}
		}
	}
	l.mu.Unlock()
	for _, inv := range backlog {
		if err := fn(inv); err != nil {
			return err
		}
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case inv := <-l.updates:
			if err := fn(inv); err != nil {
				return err
			}
		}
	}
}

// fakeChat is a Messenger that records what the engine sends.
type fakeChat struct {
	mu       sync.Mutex
	me       string
	contacts map[string]*chat.Contact
	sent     []*chat.Message
	n        int
	// sendErr, if set, is what SendRumor answers (say, no DM relay is
	// known for the peer).
	sendErr error
	// afterSend, if set, runs when SendRumor has taken a message.
	afterSend func()
}

func (c *fakeChat) PublicKey() string { return c.me }

func (c *fakeChat) Resolve(_ context.Context, addr string) (*chat.Contact, error) {
	if ct := c.contacts[addr]; ct != nil {
		return ct, nil
	}
	return nil, fmt.Errorf("unknown contact %q", addr)
}

func (c *fakeChat) SendRumor(_ context.Context, recipients []string, kind int, content string, tags nostr.Tags, _ chat.SendOptions) (*chat.Message, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sendErr != nil {
		return nil, c.sendErr
	}
	c.n++
	h := sha256.Sum256(fmt.Appendf(nil, "%s %d %d", c.me, kind, c.n))
	tags = append(nostr.Tags{{"p", recipients[0]}}, tags...)
	m := &chat.Message{ID: hex.EncodeToString(h[:]), Sender: c.me, Kind: kind, Content: content, Tags: tags, Outgoing: true,
		Conversation: chat.ConversationID([]string{c.me, recipients[0]}), CreatedAt: time.Now()}
	c.sent = append(c.sent, m)
	if c.afterSend != nil {
		c.afterSend()
	}
	return m, nil
}

func (c *fakeChat) Handle(int, func(context.Context, *chat.Message)) {}

func (c *fakeChat) TipMessages(context.Context, time.Time) ([]*chat.Message, error) { return nil, nil }

func (c *fakeChat) Message(_ context.Context, id string) (*chat.Message, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.sent {
		if m.ID == id {
			return m, nil
		}
	}
	return nil, errors.New("no such message")
}

// sentOf returns the messages of kind sent about tip id.
func (c *fakeChat) sentOf(kind int, id string) []*chat.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*chat.Message
	for _, m := range c.sent {
		if m.Kind == kind && m.TipID() == id {
			out = append(out, m)
		}
	}
	return out
}

// fakeClock is a settable Config.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newFakeEngine is an engine on fakeLN and fakeChat that is not started:
// a test drives it through onMessage, step and onInvoiceUpdate.
func newFakeEngine(t testing.TB, ln *fakeLN, ch *fakeChat, clock *fakeClock) *Engine {
	t.Helper()
	ln.now = clock.now
	e, err := New(Config{Lightning: ln, Chat: ch, DBPath: filepath.Join(t.TempDir(), "payments.db"), Logger: testLogger(t),
		Now: clock.now, RetryBase: time.Millisecond, RetryMax: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.cancel()
		e.wg.Wait()
		_ = e.st.db.Close()
	})
	return e
}

// settleSteps runs the engine's worker until the steps it starts are done.
func (e *Engine) runSteps() {
	e.flushOutbox(e.ctx)
	e.step()
	e.wg.Wait()
	e.flushOutbox(e.ctx)
}

func mustDecodeHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
