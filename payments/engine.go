package payments

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/chat"
	"github.com/anchorchat/anchorchat/internal/hub"
)

// Config configures an Engine.
type Config struct {
	Lightning Lightning // the user's LND (required)
	Chat      Messenger // the user's chat service (required)
	DBPath    string    // SQLite store of tips (required; created 0600)
	Logger    *slog.Logger
	Now       func() time.Time

	// MaxTipSat bounds one outgoing tip (default 100 000 sat); DailyLimitSat
	// bounds what outgoing tips may spend in any 24 hours, fees excluded
	// (default 1 000 000 sat). MaxReceiveSat bounds the invoices we create
	// for incoming requests (default 10 000 000 sat).
	MaxTipSat, DailyLimitSat, MaxReceiveSat int64
	// Fee limit of a payment: the larger of FeeLimitMinSat (default 10) and
	// FeeLimitPPM of the amount (default 10 000 = 1 %).
	FeeLimitMinSat, FeeLimitPPM int64
	// PaymentTimeout bounds one payment attempt in LND (default 60 s).
	PaymentTimeout time.Duration
	// InvoiceExpiry of the invoices we create (default 1 h).
	InvoiceExpiry time.Duration
	// MinExpiryLeft: an invoice expiring sooner is refused (default 30 s).
	MinExpiryLeft time.Duration
	// InvoiceWait: in ModeAuto, keysend when no invoice arrived after this
	// and the recipient's claim names an LND node (default 2 min).
	InvoiceWait time.Duration
	// AnswerWait: a tip we sent that is still requested after this (the
	// recipient's node never answered with an invoice, and there is no
	// keysend to fall back on) ends failed, and the recipient is told, so
	// an invoice made later is cancelled (default 24 h).
	AnswerWait time.Duration
	// RetryBase/RetryMax: backoff of steps that failed because LND was
	// unreachable (default 1 s doubling to 1 min).
	RetryBase, RetryMax time.Duration
}

// Engine runs the tip protocol for one user. Create with New, then Start.
type Engine struct {
	cfg Config
	ln  Lightning
	ch  Messenger
	me  string
	st  *store
	log *slog.Logger
	now func() time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{}

	activeMu sync.Mutex
	active   map[string]bool // tips with a running LND step

	flushMu sync.Mutex // one outbox flusher at a time

	// lookups: payment hashes of receipts that wait (keepEarlyReceipt),
	// for lookupKeysends to ask LND about.
	lookups chan []byte

	watch *hub.Hub[*Tip]

	healthMu sync.Mutex
	health   Health
}

// Health is what the node shows about payments.
type Health struct {
	LND       *NodeInfo // nil while unreachable
	LNDError  string    // the last error reaching LND, "" when fine
	CheckedAt time.Time
	// InvoiceStream is true while the invoice subscription is up.
	InvoiceStream bool
}

// New opens the tip store; nothing runs until Start.
func New(cfg Config) (*Engine, error) {
	if cfg.Lightning == nil || cfg.Chat == nil || cfg.DBPath == "" {
		return nil, errors.New("payments: Config.Lightning, Config.Chat and Config.DBPath are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	def := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.MaxTipSat, 100_000)
	def(&cfg.DailyLimitSat, 1_000_000)
	def(&cfg.MaxReceiveSat, 10_000_000)
	def(&cfg.FeeLimitMinSat, 10)
	def(&cfg.FeeLimitPPM, 10_000)
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defd(&cfg.PaymentTimeout, 60*time.Second)
	defd(&cfg.InvoiceExpiry, time.Hour)
	defd(&cfg.MinExpiryLeft, 30*time.Second)
	defd(&cfg.InvoiceWait, 2*time.Minute)
	defd(&cfg.AnswerWait, 24*time.Hour)
	defd(&cfg.RetryBase, time.Second)
	defd(&cfg.RetryMax, time.Minute)
	st, err := openStore(context.Background(), cfg.DBPath)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		cfg: cfg, ln: cfg.Lightning, ch: cfg.Chat, me: cfg.Chat.PublicKey(), st: st,
		log: cfg.Logger.With("component", "payments"), now: cfg.Now,
		wake: make(chan struct{}, 1), active: map[string]bool{}, watch: hub.New[*Tip](256), lookups: make(chan []byte, 64),
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	return e, nil
}

// Start registers the tip handlers with the chat service (call it before
// the chat service's Start so no tip message is missed; messages stored
// earlier are replayed anyway), then runs the worker and the LND invoice
// subscription until Close.
func (e *Engine) Start(ctx context.Context) error {
	e.ch.Handle(chat.KindTipRequest, e.onMessage)
	e.ch.Handle(chat.KindTipInvoice, e.onMessage)
	e.ch.Handle(chat.KindTipReceipt, e.onMessage)
	e.ch.Handle(chat.KindTipStatus, e.onMessage)
	// Replay tip messages stored while we were not running (or crashed
	// between the chat store and ours): every handler is idempotent.
	msgs, err := e.ch.TipMessages(ctx, e.now().Add(-7*24*time.Hour))
	if err != nil {
		return err
	}
	for _, m := range msgs {
		e.onMessage(ctx, m)
	}
	e.wg.Add(3)
	go e.workLoop()
	go e.invoiceLoop()
	go e.lookupKeysends()
	e.kick()
	return nil
}

// Close stops the engine. Pending tips stay in the store and resume at the
// next Start.
func (e *Engine) Close() error {
	e.cancel()
	e.wg.Wait()
	e.watch.Close()
	return e.st.db.Close()
}

// Health reports LND's reachability as last seen, refreshing it with a
// GetInfo call bounded by ctx.
func (e *Engine) Health(ctx context.Context) Health {
	info, err := e.ln.Info(ctx)
	e.healthMu.Lock()
	defer e.healthMu.Unlock()
	e.health.CheckedAt = e.now()
	if err != nil {
		e.health.LND, e.health.LNDError = nil, err.Error()
	} else {
		e.health.LND, e.health.LNDError = info, ""
	}
	return e.health
}

func (e *Engine) kick() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Watch delivers every tip change until ctx ends or the engine closes; a
// slow watcher loses changes (never blocking the engine).
func (e *Engine) Watch(ctx context.Context) <-chan *Tip {
	return e.watch.Watch(ctx)
}

func (e *Engine) notify(id, dir, peer string) {
	t, err := getTip(e.ctx, e.st.db, id, dir, peer)
	if err != nil {
		return
	}
	e.watch.Publish(t)
}

// TipRequest is a tip to send.
type TipRequest struct {
	To         string // @handle, npub, nprofile, hex or name@domain
	AmountSat  int64  // or AmountMsat
	AmountMsat int64
	Memo       string
	Mode       Mode // default ModeAuto
}

// Tip starts a tip: checks the limits, resolves the recipient, stores the
// tip and queues the request message. It returns at once in state
// requested; the rest happens in the background (follow with Watch or
// Get).
func (e *Engine) Tip(ctx context.Context, req TipRequest) (*Tip, error) {
	msat := req.AmountMsat
	if msat == 0 {
		if req.AmountSat > math.MaxInt64/1000 {
			// Its msat would wrap around to some other amount.
			return nil, fmt.Errorf("payments: %d sat is above the per-tip limit of %d sat (payments.max-tip-sat)", req.AmountSat, e.cfg.MaxTipSat)
		}
		msat = max(req.AmountSat, math.MinInt64/1000) * 1000
	}
	if msat <= 0 {
		return nil, errors.New("payments: the amount must be positive")
	}
	if msat > e.cfg.MaxTipSat*1000 {
		return nil, fmt.Errorf("payments: %s is above the per-tip limit of %d sat (payments.max-tip-sat)", fmtMsat(msat), e.cfg.MaxTipSat)
	}
	if spent, err := e.spentToday(ctx, e.st.db); err != nil {
		return nil, err
	} else if spent+msat > e.cfg.DailyLimitSat*1000 {
		return nil, fmt.Errorf("payments: %s would exceed the daily limit of %d sat (%s spent in the last 24 h)", fmtMsat(msat), e.cfg.DailyLimitSat, fmtMsat(spent))
	}
	if len(req.Memo) > MaxMemoBytes {
		return nil, fmt.Errorf("payments: memo longer than %d bytes", MaxMemoBytes)
	}
	mode := req.Mode
	if mode == "" {
		mode = ModeAuto
	}
	if mode != ModeAuto && mode != ModeInvoice && mode != ModeKeysend {
		return nil, fmt.Errorf("payments: unknown mode %q", mode)
	}
	c, err := e.ch.Resolve(ctx, req.To)
	if err != nil {
		return nil, err
	}
	if c.PubKey == e.me {
		return nil, errors.New("payments: cannot tip yourself")
	}
	if mode == ModeKeysend && c.LNNode == "" {
		return nil, fmt.Errorf("payments: keysend needs the recipient's LND node, and %s's handle claim names none", c.Name())
	}
	id := newTipID()
	conv := chat.ConversationID([]string{e.me, c.PubKey})
	now := e.now().UnixMilli()
	tags := nostr.Tags{{"tip", id}, {"amount", strconv.FormatInt(msat, 10)}}
	err = e.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO tips(id, dir, peer, conversation, amount_msat, memo, state, mode, peer_ln, created_ms, updated_ms)
			VALUES(?, 'out', ?, ?, ?, ?, 'requested', ?, ?, ?, ?)`, id, c.PubKey, conv, msat, req.Memo, string(mode), c.LNNode, now, now); err != nil {
			return err
		}
		return enqueue(ctx, tx, id, "out", c.PubKey, chat.KindTipRequest, req.Memo, tags)
	})
	if err != nil {
		return nil, fmt.Errorf("payments: store tip: %w", err)
	}
	e.log.Info("tip requested", "tip", id, "to", c.PubKey, "amount_msat", msat, "mode", mode)
	e.flushOutbox(ctx) // our goroutine: the request leaves now
	e.kick()
	e.notify(id, "out", c.PubKey)
	// Stored, the tip goes ahead whatever becomes of the caller: it gets
	// the tip, not an error that would invite a second one.
	return getTip(context.WithoutCancel(ctx), e.st.db, id, "out", c.PubKey)
}

// Get returns a tip by id (an outgoing one first, else an incoming one).
func (e *Engine) Get(ctx context.Context, id string) (*Tip, error) {
	ts, err := queryTips(ctx, e.st.db, `WHERE id = ? ORDER BY dir = 'out' DESC, created_ms LIMIT 1`, id)
	if err != nil {
		return nil, fmt.Errorf("payments: %w", err)
	}
	if len(ts) == 0 {
		return nil, ErrNotFound
	}
	return ts[0], nil
}

// ListOptions filter List.
type ListOptions struct {
	Conversation string // "" for all
	Outgoing     *bool  // nil for both directions
	Limit        int    // default 100
}

// List returns tips, newest first (`anchorchat payments`; with a
// conversation id, what `anchorchat chat` shows inline beside the tip
// messages, matched by Message.TipID()).
func (e *Engine) List(ctx context.Context, o ListOptions) ([]*Tip, error) {
	where := `WHERE 1=1`
	var args []any
	if o.Conversation != "" {
		where += ` AND conversation = ?`
		args = append(args, o.Conversation)
	}
	if o.Outgoing != nil {
		where += ` AND dir = ?`
		args = append(args, map[bool]string{true: "out", false: "in"}[*o.Outgoing])
	}
	if o.Limit <= 0 {
		o.Limit = 100
	}
	args = append(args, o.Limit)
	ts, err := queryTips(ctx, e.st.db, where+` ORDER BY created_ms DESC LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("payments: %w", err)
	}
	return ts, nil
}

// ErrNotCancellable: the tip's payment may be in flight or done.
var ErrNotCancellable = errors.New("payments: tip cannot be cancelled")

// Cancel cancels a tip that is not being paid: an outgoing tip in state
// requested or invoiced (nothing was paid; the recipient is told), or an
// incoming one not yet paid (its invoice is cancelled in LND).
func (e *Engine) Cancel(ctx context.Context, id string) (*Tip, error) {
	t, err := e.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	dir := dirOf(t)
	e.activeMu.Lock()
	busy := e.active[id+dir]
	e.activeMu.Unlock()
	if busy {
		return t, fmt.Errorf("%w now: an attempt to pay it is running; try again", ErrNotCancellable)
	}
	if t.State != StateRequested && t.State != StateInvoiced {
		return t, fmt.Errorf("%w: it is %s", ErrNotCancellable, t.Status())
	}
	reason := "cancelled by the " + map[bool]string{true: "sender", false: "recipient"}[t.Outgoing]
	ok, err := e.finish(ctx, t, StateCancelled, reason, true)
	if err != nil {
		return nil, err
	}
	if !ok {
		t, _ = e.Get(ctx, id)
		return t, fmt.Errorf("%w: it is %s", ErrNotCancellable, t.Status())
	}
	e.log.Info("tip cancelled", "tip", id)
	return e.Get(ctx, id)
}

func dirOf(t *Tip) string {
	if t.Outgoing {
		return "out"
	}
	return "in"
}

func (e *Engine) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := e.st.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

func enqueue(ctx context.Context, tx querier, id, dir, peer string, kind int, content string, tags nostr.Tags) error {
	b, _ := json.Marshal(tags)
	_, err := tx.ExecContext(ctx, `INSERT INTO outbox(tip_id, dir, peer, kind, content, tags) VALUES(?,?,?,?,?,?)`, id, dir, peer, kind, content, string(b))
	return err
}

// spentToday is what outgoing tips committed to paying in the last 24 h.
func (e *Engine) spentToday(ctx context.Context, q querier) (int64, error) {
	var n int64
	err := q.QueryRowContext(ctx, `SELECT coalesce(sum(amount_msat), 0) FROM tips WHERE dir = 'out'
		AND state IN ('paying', 'paid', 'settled') AND paying_ms >= ?`, e.now().Add(-24*time.Hour).UnixMilli()).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("payments: daily spending: %w", err)
	}
	return n, nil
}

// finish moves a non-final, not-yet-paying tip to failed or cancelled and,
// if tell, queues a status message for the peer. It reports false if the
// tip had already moved on (nothing changed).
func (e *Engine) finish(ctx context.Context, t *Tip, st State, reason string, tell bool) (bool, error) {
	dir := dirOf(t)
	var changed bool
	err := e.tx(ctx, func(tx *sql.Tx) error {
		// An incoming tip's invoice is cancelled if the row has one (t may
		// have been read before makeInvoice stored it); next_ms = 0: now,
		// not at the expiry check makeInvoice scheduled.
		res, err := tx.ExecContext(ctx, `UPDATE tips SET state = ?, reason = ?, last_error = '',
			cancel_inv = CASE WHEN dir = 'in' AND payment_hash != '' THEN 1 ELSE 0 END, updated_ms = ?, next_ms = 0, attempts = 0
			WHERE id = ? AND dir = ? AND peer = ? AND state IN ('requested', 'invoiced')`,
			string(st), reason, e.now().UnixMilli(), t.ID, dir, t.Peer)
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		changed = n == 1
		if changed && tell {
			return enqueue(ctx, tx, t.ID, dir, t.Peer, chat.KindTipStatus, reason, nostr.Tags{{"tip", t.ID}, {"state", string(st)}})
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("payments: %w", err)
	}
	if changed {
		e.log.Info("tip ended", "tip", t.ID, "dir", dir, "state", st, "reason", reason)
		e.kick() // the worker hands the message to chat
		e.notify(t.ID, dir, t.Peer)
		e.kick()
	}
	return changed, nil
}

// ---- incoming tip messages ----

func (e *Engine) onMessage(ctx context.Context, m *chat.Message) {
	if m.Sender == e.me {
		return // our own copy
	}
	id := m.TipID()
	if !isHex(id, 32) {
		e.log.Warn("tip message without a valid tip id", "message", m.ID, "kind", m.Kind)
		return
	}
	var err error
	switch m.Kind {
	case chat.KindTipRequest:
		err = e.onRequest(ctx, id, m)
	case chat.KindTipInvoice:
		err = e.onInvoice(ctx, id, m)
	case chat.KindTipReceipt:
		err = e.onReceipt(ctx, id, m)
	case chat.KindTipStatus:
		err = e.onStatus(ctx, id, m)
	}
	if err != nil {
		e.log.Warn("tip message not processed", "message", m.ID, "kind", m.Kind, "tip", id, "err", err)
	}
	e.kick()
}

// Limits on what one peer's requests may ask of us.
const (
	MaxMemoBytes   = 1000 // a request's memo (docs/protocol.md)
	MaxOpenPerPeer = 20   // incoming tips requested or invoiced at once
)

func (e *Engine) onRequest(ctx context.Context, id string, m *chat.Message) error {
	msat, err := parseAmount(m.Tags)
	if err != nil {
		return err
	}
	peers := 0
	for t := range m.Tags.FindAll("p") {
		if t[1] != e.me {
			peers++
		}
	}
	now := e.now().UnixMilli()
	state, reason := StateRequested, ""
	switch {
	case peers > 0:
		state, reason = StateFailed, "tips are only supported in one-to-one conversations"
	case msat > e.cfg.MaxReceiveSat*1000:
		state, reason = StateFailed, fmt.Sprintf("refused by the recipient: %s is above its limit of %d sat", fmtMsat(msat), e.cfg.MaxReceiveSat)
	case len(m.Content) > MaxMemoBytes:
		state, reason = StateFailed, fmt.Sprintf("refused by the recipient: the memo is longer than %d bytes", MaxMemoBytes)
	}
	var changed bool
	err = e.tx(ctx, func(tx *sql.Tx) error {
		if state == StateRequested {
			// Each open request makes an invoice in our LND: a peer gets
			// only so many at a time.
			var open int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM tips WHERE dir = 'in' AND peer = ? AND id != ? AND state IN ('requested', 'invoiced')`,
				m.Sender, id).Scan(&open); err != nil {
				return err
			}
			if open >= MaxOpenPerPeer {
				state, reason = StateFailed, fmt.Sprintf("refused by the recipient: %d tips from you are already open", open)
			}
		}
		res, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO tips(id, dir, peer, conversation, amount_msat, memo, state, reason, request_id, created_ms, updated_ms)
			VALUES(?, 'in', ?, ?, ?, ?, ?, ?, ?, ?, ?)`, id, m.Sender, m.Conversation, msat, m.Content, string(state), reason, m.ID, now, now)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			changed = true
			if state == StateFailed {
				return enqueue(ctx, tx, id, "in", m.Sender, chat.KindTipStatus, reason, nostr.Tags{{"tip", id}, {"state", string(StateFailed)}})
			}
			return nil
		}
		// Known tip: a keysend (whose record names this request) or a
		// receipt may have come first; attach the request. A second request for the same tip never makes a second
		// invoice.
		res, err = tx.ExecContext(ctx, `UPDATE tips SET request_id = ?, memo = ?, conversation = ?, updated_ms = ? WHERE id = ? AND dir = 'in' AND peer = ? AND memo = '' AND request_id IN ('', ?)`,
			m.ID, m.Content, m.Conversation, now, id, m.Sender, m.ID)
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		changed = n == 1
		return nil
	})
	if err != nil {
		return err
	}
	if changed {
		e.log.Info("tip request received", "tip", id, "from", m.Sender, "amount_msat", msat, "state", state)
		e.kick() // the worker hands the message to chat
		e.notify(id, "in", m.Sender)
	} else {
		e.log.Info("duplicate tip request ignored", "tip", id, "from", m.Sender, "message", m.ID)
	}
	return nil
}

func (e *Engine) onInvoice(ctx context.Context, id string, m *chat.Message) error {
	t, err := getTip(ctx, e.st.db, id, "out", m.Sender)
	if err != nil {
		return fmt.Errorf("invoice for an unknown tip: %w", err)
	}
	bolt11 := strings.TrimSpace(tag(m.Tags, "bolt11"))
	if bolt11 == "" {
		return errors.New("invoice message without a bolt11 tag")
	}
	req := tag(m.Tags, "e")
	if req == "" || req != t.RequestID { // "" would match a request id not recorded yet
		// Our request is in chat but its id is not recorded here (yet), or
		// it went twice (we crashed after chat took it and before we noted
		// that, and the outbox sent it again as another rumor, which the
		// recipient ignores as repeating a known tip): accept the reference
		// only if it names a request of ours for this very tip, and make
		// it the tip's (the invoice's description hash must commit to it).
		rm, err := e.ch.Message(ctx, req)
		if err != nil || rm.Sender != e.me || rm.Kind != chat.KindTipRequest || rm.TipID() != id ||
			tag(rm.Tags, "amount") != strconv.FormatInt(t.AmountMsat, 10) {
			return fmt.Errorf("invoice answers %q, not our request for this tip (%q)", req, t.RequestID)
		}
		res, err := e.st.db.ExecContext(ctx, `UPDATE tips SET request_id = ? WHERE id = ? AND dir = 'out' AND peer = ? AND state = 'requested'`, req, id, m.Sender)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			e.log.Info("invoice ignored: the tip is already past requesting (never paid twice)", "tip", id, "state", t.State, "message", m.ID)
			return nil
		}
		t.RequestID = req
	}
	res, err := e.st.db.ExecContext(ctx, `UPDATE tips SET state = 'invoiced', bolt11 = ?, invoice_msg = ?, updated_ms = ?, next_ms = 0, attempts = 0
		WHERE id = ? AND dir = 'out' AND peer = ? AND state = 'requested'`, bolt11, m.ID, e.now().UnixMilli(), id, m.Sender)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		e.log.Info("invoice ignored: the tip is already past requesting (never paid twice)", "tip", id, "state", t.State, "message", m.ID)
		return nil
	}
	e.log.Info("tip invoice received", "tip", id)
	e.notify(id, "out", m.Sender)
	return nil
}

func (e *Engine) onReceipt(ctx context.Context, id string, m *chat.Message) error {
	pre, err := hex.DecodeString(tag(m.Tags, "preimage"))
	if err != nil || len(pre) != 32 {
		return errors.New("receipt without a valid preimage")
	}
	h := sha256.Sum256(pre)
	hash := hex.EncodeToString(h[:])
	var receipted, kept bool
	keysend := tag(m.Tags, "keysend") == "1"
	// One transaction, as a keysend's settlement is one (onInvoiceUpdate):
	// a receipt that finds no payment hash is kept before the settlement
	// can look for it, never after.
	err = e.tx(ctx, func(tx *sql.Tx) error {
		t, err := getTip(ctx, tx, id, "in", m.Sender)
		if errors.Is(err, ErrNotFound) || (err == nil && (t.PaymentHash == "" ||
			keysend && t.PaymentHash != hash && !t.Keysend && t.State != StateSettled)) {
			// The receipt overtook LND's settlement (a keysend while we
			// were offline; we may have invoiced the request meanwhile),
			// or it is made up: nothing to check it against yet. It waits,
			// and counts once a settlement shows a payment hash its
			// preimage hashes to; LND is asked about that hash too, in
			// case its stream never reports it. Until then it marks
			// nothing paid.
			kept = true
			return keepEarlyReceipt(ctx, tx, id, m.Sender, pre, e.now())
		}
		if err != nil {
			return err
		}
		if t.PaymentHash != hash {
			return fmt.Errorf("receipt preimage does not hash to the invoice's payment hash %s", t.PaymentHash)
		}
		_, err = tx.ExecContext(ctx, `UPDATE tips SET receipt = 1, preimage = ?,
			state = CASE WHEN state IN ('requested', 'invoiced') THEN 'paid' ELSE state END, updated_ms = ?
			WHERE id = ? AND dir = 'in' AND peer = ?`, hex.EncodeToString(pre), e.now().UnixMilli(), id, m.Sender)
		receipted = err == nil
		return err
	})
	if receipted {
		e.log.Info("tip receipt received", "tip", id)
		e.notify(id, "in", m.Sender)
	}
	if kept && err == nil {
		select {
		case e.lookups <- h[:]:
		default: // Reconcile asks at the next subscription
		}
	}
	return err
}

// lookupKeysends asks LND about the payment hashes of waiting receipts.
func (e *Engine) lookupKeysends() {
	defer e.wg.Done()
	for {
		select {
		case <-e.ctx.Done():
			return
		case h := <-e.lookups:
			if err := e.lookupKeysend(e.ctx, h); err != nil && e.ctx.Err() == nil {
				e.log.Info("waiting receipt: keysend not found in LND", "payment_hash", hex.EncodeToString(h), "err", err)
			}
		}
	}
}

// lookupKeysend settles the tip of a keysend LND settled with payment hash
// h, if there is one: LND's invoice stream replays nothing to a
// subscription whose cursors are still 0 (a node that has not seen an
// invoice update yet), so a keysend that came while we were offline may be
// known only by its receipt.
func (e *Engine) lookupKeysend(ctx context.Context, h []byte) error {
	inv, err := e.ln.LookupInvoice(ctx, h)
	if err != nil {
		return err
	}
	if inv.State != InvoiceSettled || !inv.Keysend {
		return nil
	}
	return e.applyInvoice(ctx, inv, false)
}

// Early receipts kept per peer, and for how long.
const (
	maxEarlyReceipts = 100
	earlyReceiptTTL  = 7 * 24 * time.Hour
)

// keepEarlyReceipt stores a receipt that cannot be checked yet, keeping at
// most maxEarlyReceipts per peer, none older than earlyReceiptTTL.
func keepEarlyReceipt(ctx context.Context, tx *sql.Tx, id, peer string, preimage []byte, now time.Time) error {
	if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO early_receipts(tip_id, peer, preimage, received_ms) VALUES(?,?,?,?)`,
		id, peer, hex.EncodeToString(preimage), now.UnixMilli()); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `DELETE FROM early_receipts WHERE received_ms < ? OR (peer = ? AND tip_id NOT IN (
		SELECT tip_id FROM early_receipts WHERE peer = ? ORDER BY received_ms DESC LIMIT ?))`,
		now.Add(-earlyReceiptTTL).UnixMilli(), peer, peer, maxEarlyReceipts)
	return err
}

// applyEarlyReceipt marks tip (id, in, peer), just settled by keysend with
// payment hash hash, as receipted if a receipt for it came early and its
// preimage hashes to hash. (An invoiced tip's hash is known before it can be
// paid, so its receipt never waits.)
func applyEarlyReceipt(ctx context.Context, tx *sql.Tx, id, peer, hash string) error {
	var preHex string
	err := tx.QueryRowContext(ctx, `SELECT preimage FROM early_receipts WHERE tip_id = ? AND peer = ?`, id, peer).Scan(&preHex)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM early_receipts WHERE tip_id = ? AND peer = ?`, id, peer); err != nil {
		return err
	}
	pre, _ := hex.DecodeString(preHex)
	if h := sha256.Sum256(pre); hex.EncodeToString(h[:]) != hash {
		return nil // made up, or for another payment
	}
	_, err = tx.ExecContext(ctx, `UPDATE tips SET receipt = 1, preimage = ? WHERE id = ? AND dir = 'in' AND peer = ?`, preHex, id, peer)
	return err
}

func (e *Engine) onStatus(ctx context.Context, id string, m *chat.Message) error {
	st := State(tag(m.Tags, "state"))
	reason := clipReason(m.Content)
	if t, err := getTip(ctx, e.st.db, id, "out", m.Sender); err == nil {
		switch st {
		case StateSettled:
			// The confirmation may overtake LND's answer to our payment:
			// remember it (receipt = 1) and settle once we know it is paid.
			_, err = e.st.db.ExecContext(ctx, `UPDATE tips SET receipt = 1, state = CASE WHEN state = 'paid' THEN 'settled' ELSE state END, updated_ms = ?
				WHERE id = ? AND dir = 'out' AND peer = ? AND state IN ('paying', 'paid')`, e.now().UnixMilli(), id, m.Sender)
			if err == nil {
				e.log.Info("tip settled (confirmed by the recipient)", "tip", id)
				e.notify(id, "out", m.Sender)
			}
			return err
		case StateFailed, StateCancelled:
			_, err := e.finish(ctx, t, StateFailed, "recipient: "+reason, false)
			return err
		}
		return fmt.Errorf("unknown tip state %q", st)
	}
	t, err := getTip(ctx, e.st.db, id, "in", m.Sender)
	if err != nil {
		return err
	}
	if st == StateFailed || st == StateCancelled {
		_, err := e.finish(ctx, t, st, "sender: "+reason, false)
		return err
	}
	return nil
}

// ---- the outbox: tip messages handed to the chat service ----

func (e *Engine) flushOutbox(ctx context.Context) {
	e.flushMu.Lock()
	defer e.flushMu.Unlock()
	for ctx.Err() == nil {
		var seq, failingMs int64
		var id, dir, peer, content, tagsJSON string
		var kind, attempts int
		// The oldest message that is due and is its tip's first: a tip's
		// messages go in order, and one that cannot go yet holds up no
		// other tip's.
		err := e.st.db.QueryRowContext(ctx, `SELECT seq, tip_id, dir, peer, kind, content, tags, attempts, failing_ms FROM outbox o
			WHERE next_ms <= ? AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.tip_id = o.tip_id AND p.dir = o.dir AND p.peer = o.peer AND p.seq < o.seq)
			ORDER BY seq LIMIT 1`, e.now().UnixMilli()).
			Scan(&seq, &id, &dir, &peer, &kind, &content, &tagsJSON, &attempts, &failingMs)
		if errors.Is(err, sql.ErrNoRows) {
			return
		}
		if err != nil {
			e.log.Error("tip outbox", "err", err)
			return
		}
		var tags nostr.Tags
		_ = json.Unmarshal([]byte(tagsJSON), &tags)
		m, err := e.ch.SendRumor(ctx, []string{peer}, kind, content, tags, chat.SendOptions{})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if err := e.outboxFailed(ctx, seq, id, dir, peer, kind, attempts, failingMs, err); err != nil {
				e.log.Error("tip outbox", "err", err)
				return
			}
			continue
		}
		// Chat has the message: note that whatever becomes of the caller's
		// context (Tip's), or the outbox sends it again, as another rumor.
		dctx := context.WithoutCancel(ctx)
		err = e.tx(dctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(dctx, `DELETE FROM outbox WHERE seq = ?`, seq); err != nil {
				return err
			}
			switch kind {
			case chat.KindTipRequest:
				// Unless an invoice answering an earlier copy of the
				// request (sent before a crash) named that one first.
				_, err = tx.ExecContext(dctx, `UPDATE tips SET request_id = ? WHERE id = ? AND dir = ? AND peer = ? AND request_id = ''`, m.ID, id, dir, peer)
			case chat.KindTipInvoice:
				_, err = tx.ExecContext(dctx, `UPDATE tips SET invoice_msg = ? WHERE id = ? AND dir = ? AND peer = ?`, m.ID, id, dir, peer)
			}
			return err
		})
		if err != nil {
			e.log.Error("tip outbox", "err", err)
			return
		}
		if kind == chat.KindTipRequest {
			e.notify(id, dir, peer)
		}
	}
}

// outboxGiveUp is how long a tip message may fail to reach the messenger
// (say, no DM relay is known for the peer) before it is dropped.
const outboxGiveUp = 24 * time.Hour

// outboxFailed schedules the message for a retry with backoff, or drops it
// once it has failed for outboxGiveUp, noting that on the tip.
func (e *Engine) outboxFailed(ctx context.Context, seq int64, id, dir, peer string, kind, attempts int, failingMs int64, cause error) error {
	now := e.now()
	if failingMs == 0 {
		failingMs = now.UnixMilli()
	}
	if now.Sub(time.UnixMilli(failingMs)) >= outboxGiveUp {
		e.log.Warn("tip message dropped: it could not be sent for a day", "tip", id, "kind", kind, "err", cause)
		err := e.tx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE seq = ?`, seq); err != nil {
				return err
			}
			if kind == chat.KindTipRequest && dir == "out" {
				// Without its request the tip can go nowhere (no invoice
				// will answer it, no keysend names it, and the wait for
				// an answer never starts): it ends, and nothing was paid.
				res, err := tx.ExecContext(ctx, `UPDATE tips SET state = 'failed', reason = ?, last_error = '', next_ms = 0, attempts = 0, updated_ms = ?
					WHERE id = ? AND dir = 'out' AND peer = ? AND state = 'requested'`,
					fmt.Sprintf("the tip request could not be sent: %v", cause), now.UnixMilli(), id, peer)
				if err != nil {
					return err
				}
				if n, _ := res.RowsAffected(); n == 1 {
					return nil
				}
			}
			_, err := tx.ExecContext(ctx, `UPDATE tips SET last_error = ?, updated_ms = ? WHERE id = ? AND dir = ? AND peer = ?`,
				fmt.Sprintf("tip message (kind %d) not sent: %v", kind, cause), now.UnixMilli(), id, dir, peer)
			return err
		})
		if err == nil {
			e.notify(id, dir, peer)
		}
		return err
	}
	d := e.backoff(attempts)
	e.log.Warn("tip message not queued yet, will retry", "tip", id, "kind", kind, "in", d, "err", cause)
	_, err := e.st.db.ExecContext(ctx, `UPDATE outbox SET attempts = attempts + 1, next_ms = ?, failing_ms = ? WHERE seq = ?`,
		now.Add(d).UnixMilli(), failingMs, seq)
	return err
}

// ---- the worker: LND steps ----

func (e *Engine) workLoop() {
	defer e.wg.Done()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		e.flushOutbox(e.ctx)
		e.step()
		select {
		case <-e.ctx.Done():
			return
		case <-e.wake:
		case <-t.C:
		}
	}
}

// step starts, for every tip that needs LND, its next step in a goroutine
// (at most one per tip at a time).
func (e *Engine) step() {
	now := e.now()
	tips, err := queryTips(e.ctx, e.st.db, `WHERE next_ms <= ? AND (
		(dir = 'out' AND state IN ('requested', 'invoiced', 'paying')) OR
		(dir = 'in' AND ((state = 'requested' AND bolt11 = '' AND request_id != '') OR state = 'invoiced' OR cancel_inv = 1)))`, now.UnixMilli())
	if err != nil {
		if e.ctx.Err() == nil {
			e.log.Error("tip worker", "err", err)
		}
		return
	}
	for _, t := range tips {
		var fn func(context.Context, *Tip) error
		switch {
		case t.Outgoing && t.State == StateRequested:
			if t.RequestID == "" {
				continue // the request is still in our outbox
			}
			switch {
			case t.Mode == ModeKeysend || t.Mode == ModeAuto && t.PeerLNNode != "" && now.Sub(t.CreatedAt) >= e.cfg.InvoiceWait:
				fn = e.payKeysend
			case now.Sub(t.CreatedAt) >= e.cfg.AnswerWait:
				fn = e.giveUpWaiting
			}
		case t.Outgoing && t.State == StateInvoiced:
			fn = e.payInvoice
		case t.Outgoing && t.State == StatePaying:
			fn = e.resumePayment
		case !t.Outgoing && t.cancelInvoice:
			fn = e.cancelInvoice
		case !t.Outgoing && t.State == StateRequested:
			fn = e.makeInvoice
		case !t.Outgoing && t.State == StateInvoiced:
			fn = e.expireInvoice
		}
		if fn == nil {
			continue
		}
		key := t.ID + dirOf(t)
		e.activeMu.Lock()
		if e.active[key] {
			e.activeMu.Unlock()
			continue
		}
		e.active[key] = true
		e.activeMu.Unlock()
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			err := fn(e.ctx, t)
			e.activeMu.Lock()
			delete(e.active, key)
			e.activeMu.Unlock()
			if err != nil && e.ctx.Err() == nil {
				e.retryLater(t, err)
			}
			e.kick()
		}()
	}
}

// giveUpWaiting ends a tip we sent whose recipient never answered its
// request within AnswerWait, and tells them.
func (e *Engine) giveUpWaiting(ctx context.Context, t *Tip) error {
	_, err := e.finish(ctx, t, StateFailed, fmt.Sprintf("no invoice from the recipient within %s", e.cfg.AnswerWait), true)
	return err
}

// backoff is the wait before retry number attempts+1: RetryBase doubling,
// at most RetryMax.
func (e *Engine) backoff(attempts int) time.Duration {
	return min(e.cfg.RetryBase<<min(attempts, 16), e.cfg.RetryMax)
}

// retryLater records a transient error on the tip and schedules the step
// again with backoff. The tip keeps its state: nothing is lost.
func (e *Engine) retryLater(t *Tip, err error) {
	d := e.backoff(t.attempts)
	msg := err.Error()
	if errors.Is(err, ErrUnavailable) {
		msg = "LND unreachable: " + strings.TrimPrefix(msg, ErrUnavailable.Error()+": ")
	}
	e.log.Warn("tip step failed, will retry", "tip", t.ID, "state", t.State, "err", msg, "in", d)
	_, _ = e.st.db.ExecContext(e.ctx, `UPDATE tips SET last_error = ?, attempts = attempts + 1, next_ms = ?, updated_ms = ?
		WHERE id = ? AND dir = ? AND peer = ?`, msg, e.now().Add(d).UnixMilli(), e.now().UnixMilli(), t.ID, dirOf(t), t.Peer)
	e.notify(t.ID, dirOf(t), t.Peer)
}

func (e *Engine) feeLimitMsat(msat int64) int64 {
	return max(e.cfg.FeeLimitMinSat*1000, msat*e.cfg.FeeLimitPPM/1_000_000)
}

// makeInvoice (recipient): an invoice whose description hash is the
// request rumor's id, then the invoice message.
func (e *Engine) makeInvoice(ctx context.Context, t *Tip) error {
	if t.RequestID == "" || !isHex(t.RequestID, 64) {
		return nil
	}
	dh, _ := hex.DecodeString(t.RequestID)
	inv, err := e.ln.AddInvoice(ctx, InvoiceRequest{AmountMsat: t.AmountMsat, DescriptionHash: dh, Expiry: e.cfg.InvoiceExpiry})
	if err != nil {
		return err
	}
	hash := hex.EncodeToString(inv.PaymentHash)
	var changed bool
	err = e.tx(ctx, func(tx *sql.Tx) error {
		// next_ms: when to look whether the invoice expired unpaid
		// (expireInvoice).
		res, err := tx.ExecContext(ctx, `UPDATE tips SET state = 'invoiced', bolt11 = ?, payment_hash = ?, last_error = '', attempts = 0, updated_ms = ?, next_ms = ?
			WHERE id = ? AND dir = 'in' AND peer = ? AND state = 'requested' AND bolt11 = ''`, inv.PaymentRequest, hash, e.now().UnixMilli(),
			e.now().Add(e.cfg.InvoiceExpiry+invoiceExpiryGrace).UnixMilli(), t.ID, t.Peer)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		changed = true
		return enqueue(ctx, tx, t.ID, "in", t.Peer, chat.KindTipInvoice, "invoice for "+fmtMsat(t.AmountMsat),
			nostr.Tags{{"tip", t.ID}, {"e", t.RequestID}, {"amount", strconv.FormatInt(t.AmountMsat, 10)}, {"bolt11", inv.PaymentRequest}})
	})
	if err != nil {
		return fmt.Errorf("payments: %w", err)
	}
	if !changed { // cancelled or paid by keysend meanwhile
		_ = e.ln.CancelInvoice(ctx, inv.PaymentHash)
		return nil
	}
	e.log.Info("tip invoice created", "tip", t.ID, "payment_hash", hash)
	e.kick() // the worker hands the message to chat
	e.notify(t.ID, "in", t.Peer)
	return nil
}

// invoiceExpiryGrace is how long after an invoice's expiry LND is given to
// cancel it before expireInvoice looks.
const invoiceExpiryGrace = time.Minute

// expireInvoice (recipient): an incoming tip whose invoice LND no longer
// holds open (LND cancels an invoice when it expires, and SubscribeInvoices
// never reports that; or it deleted a cancelled one) ends failed, and the
// sender is told: it stops counting against MaxOpenPerPeer. An invoice still
// open is looked at again after its expiry; a settled one settles the tip.
func (e *Engine) expireInvoice(ctx context.Context, t *Tip) error {
	h, _ := hex.DecodeString(t.PaymentHash)
	inv, err := e.ln.LookupInvoice(ctx, h)
	switch {
	case errors.Is(err, ErrInvoiceNotFound):
	case err != nil:
		return err
	case inv.State == InvoiceSettled:
		return e.applyInvoice(ctx, inv, false)
	case inv.State != InvoiceCanceled:
		next := e.now()
		if inv.ExpiresAt.After(next) {
			next = inv.ExpiresAt
		}
		_, err := e.st.db.ExecContext(ctx, `UPDATE tips SET next_ms = ?, last_error = '', attempts = 0 WHERE id = ? AND dir = 'in' AND peer = ? AND state = 'invoiced'`,
			next.Add(invoiceExpiryGrace).UnixMilli(), t.ID, t.Peer)
		return err
	}
	_, err = e.finish(ctx, t, StateFailed, "the invoice expired unpaid", true)
	return err
}

func (e *Engine) cancelInvoice(ctx context.Context, t *Tip) error {
	h, _ := hex.DecodeString(t.PaymentHash)
	if t.cancelHash != "" {
		h, _ = hex.DecodeString(t.cancelHash)
	}
	if err := e.ln.CancelInvoice(ctx, h); err != nil && errors.Is(err, ErrUnavailable) {
		return err
	} else if err != nil {
		e.log.Info("cancel invoice", "tip", t.ID, "err", err) // already settled or gone
	}
	_, err := e.st.db.ExecContext(ctx, `UPDATE tips SET cancel_inv = 0, cancel_hash = '' WHERE id = ? AND dir = 'in' AND peer = ?`, t.ID, t.Peer)
	return err
}

// checkInvoice applies the sender's rules to an invoice; the error text is
// what the conversation shows.
func (e *Engine) checkInvoice(t *Tip, pr *PayReq) error {
	if pr.AmountMsat != t.AmountMsat {
		if pr.AmountMsat == 0 {
			return errors.New("refused: the invoice has no amount")
		}
		return fmt.Errorf("refused: the invoice asks for %s, the tip is %s", fmtMsat(pr.AmountMsat), fmtMsat(t.AmountMsat))
	}
	if pr.DescriptionHash != t.RequestID {
		return errors.New("refused: the invoice's description hash does not commit to this tip request")
	}
	if t.PeerLNNode != "" && !strings.EqualFold(pr.Destination, t.PeerLNNode) {
		return fmt.Errorf("refused: the invoice pays node %s, the recipient's handle claim names %s", pr.Destination, t.PeerLNNode)
	}
	if left := pr.ExpiresAt().Sub(e.now()); left < e.cfg.MinExpiryLeft {
		return fmt.Errorf("refused: the invoice expired at %s", pr.ExpiresAt().UTC().Format(time.RFC3339))
	}
	return nil
}

// ready gates paying on LND being synced with an active channel (right
// after a restart LND answers before its channels are back, and a payment
// then would fail for no good reason); not ready counts as unreachable.
func (e *Engine) ready(ctx context.Context) error {
	info, err := e.ln.Info(ctx)
	if err != nil {
		return err
	}
	switch {
	case !info.SyncedToChain:
		return fmt.Errorf("%w: LND is not synced to the chain yet", ErrUnavailable)
	case info.ActiveChannels == 0:
		return fmt.Errorf("%w: LND has no active channel yet", ErrUnavailable)
	}
	return nil
}

// payInvoice (sender): decode, check, reserve (limits, exactly once), pay.
func (e *Engine) payInvoice(ctx context.Context, t *Tip) error {
	if err := e.ready(ctx); err != nil {
		return err
	}
	pr, err := e.ln.DecodePayReq(ctx, t.Invoice)
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			return err
		}
		_, ferr := e.finish(ctx, t, StateFailed, "refused: the invoice does not decode: "+err.Error(), true)
		return ferr
	}
	if err := e.checkInvoice(t, pr); err != nil {
		_, ferr := e.finish(ctx, t, StateFailed, err.Error(), true)
		return ferr
	}
	ok, err := e.reserve(ctx, t, pr.PaymentHash, "")
	if err != nil || !ok {
		return err
	}
	return e.pay(ctx, t, PaymentRequest{Invoice: t.Invoice, FeeLimitMsat: e.feeLimitMsat(t.AmountMsat), Timeout: e.cfg.PaymentTimeout}, pr.PaymentHash)
}

// reserve moves the tip to paying, exactly once, within the limits.
func (e *Engine) reserve(ctx context.Context, t *Tip, hash, preimage string) (bool, error) {
	var ok bool
	var refused string
	err := e.tx(ctx, func(tx *sql.Tx) error {
		spent, err := e.spentToday(ctx, tx)
		if err != nil {
			return err
		}
		if t.AmountMsat > e.cfg.MaxTipSat*1000 {
			refused = fmt.Sprintf("refused: %s is above the per-tip limit of %d sat", fmtMsat(t.AmountMsat), e.cfg.MaxTipSat)
			return nil
		}
		if spent+t.AmountMsat > e.cfg.DailyLimitSat*1000 {
			refused = fmt.Sprintf("refused: %s would exceed the daily limit of %d sat", fmtMsat(t.AmountMsat), e.cfg.DailyLimitSat)
			return nil
		}
		var dup int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM tips WHERE dir = 'out' AND payment_hash = ? AND NOT (id = ? AND peer = ?)`, hash, t.ID, t.Peer).Scan(&dup); err != nil {
			return err
		}
		if dup > 0 {
			refused = "refused: this invoice was already used for another tip"
			return nil
		}
		res, err := tx.ExecContext(ctx, `UPDATE tips SET state = 'paying', payment_hash = ?, preimage = ?, keysend = ?, paying_ms = ?, updated_ms = ?, last_error = '', attempts = 0
			WHERE id = ? AND dir = 'out' AND peer = ? AND state = ?`, hash, preimage, preimage != "", e.now().UnixMilli(), e.now().UnixMilli(), t.ID, t.Peer, string(t.State))
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		ok = n == 1
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("payments: %w", err)
	}
	if refused != "" {
		_, err := e.finish(ctx, t, StateFailed, refused, true)
		return false, err
	}
	if ok {
		e.log.Info("tip paying", "tip", t.ID, "payment_hash", hash, "keysend", preimage != "")
		e.notify(t.ID, "out", t.Peer)
	}
	return ok, nil
}

// payKeysend (sender): the recipient's node did not answer; pay their
// claim's LND node directly with the tip record.
func (e *Engine) payKeysend(ctx context.Context, t *Tip) error {
	if err := e.ready(ctx); err != nil {
		return err
	}
	var pre [32]byte
	if _, err := rand.Read(pre[:]); err != nil {
		return err
	}
	h := sha256.Sum256(pre[:])
	hash := hex.EncodeToString(h[:])
	ok, err := e.reserve(ctx, t, hash, hex.EncodeToString(pre[:]))
	if err != nil || !ok {
		return err
	}
	t.Keysend = true
	return e.pay(ctx, t, e.keysendRequest(t, pre[:]), hash)
}

func (e *Engine) keysendRequest(t *Tip, pre []byte) PaymentRequest {
	rec, _ := json.Marshal(tipRecord{Tip: t.ID, From: e.me, Request: t.RequestID})
	return PaymentRequest{
		Dest: t.PeerLNNode, AmountMsat: t.AmountMsat, Preimage: pre, CustomRecords: map[uint64][]byte{RecordTip: rec},
		FeeLimitMsat: e.feeLimitMsat(t.AmountMsat), Timeout: e.cfg.PaymentTimeout,
	}
}

// resumePayment (sender, after a restart or an LND outage in paying): ask
// LND what became of the payment; if it never saw it, send it again (LND
// refuses a second payment of the same hash).
func (e *Engine) resumePayment(ctx context.Context, t *Tip) error {
	hb, _ := hex.DecodeString(t.PaymentHash)
	p, err := e.ln.TrackPayment(ctx, hb)
	if err != nil {
		return err
	}
	if p.Status != PaymentUnknown {
		return e.record(ctx, t, p, t.PaymentHash)
	}
	if err := e.ready(ctx); err != nil {
		return err
	}
	req := PaymentRequest{Invoice: t.Invoice, FeeLimitMsat: e.feeLimitMsat(t.AmountMsat), Timeout: e.cfg.PaymentTimeout}
	if t.Keysend {
		pre, _ := hex.DecodeString(t.preimage)
		req = e.keysendRequest(t, pre)
	}
	return e.pay(ctx, t, req, t.PaymentHash)
}

func (e *Engine) pay(ctx context.Context, t *Tip, req PaymentRequest, hash string) error {
	p, err := e.ln.Pay(ctx, req)
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			return err // outcome unknown: stays paying, resumed by TrackPayment
		}
		// LND answered without an outcome: it is paying or has paid this
		// hash already, or it refused the payment before starting it (an
		// expired invoice, say), as it would every time. Its payments
		// tell which.
		hb, _ := hex.DecodeString(hash)
		tp, terr := e.ln.TrackPayment(ctx, hb)
		if terr != nil {
			return terr
		}
		if tp.Status != PaymentUnknown {
			p = tp
		} else if strings.Contains(err.Error(), "already paid") || strings.Contains(err.Error(), "in transition") {
			return err
		} else {
			// LND never started it: nothing was paid, nothing will be.
			p = &Payment{Status: PaymentFailed, PaymentHash: hash, Failure: "our LND refused the payment: " + lndMessage(err)}
		}
	}
	return e.record(ctx, t, p, hash)
}

// record stores a payment's final outcome and queues the receipt or the
// failure for the recipient.
func (e *Engine) record(ctx context.Context, t *Tip, p *Payment, hash string) error {
	now := e.now().UnixMilli()
	switch p.Status {
	case PaymentSucceeded:
		h := sha256.Sum256(p.Preimage)
		if hex.EncodeToString(h[:]) != hash {
			return fmt.Errorf("payments: LND returned a preimage that does not hash to %s", hash)
		}
		pre := hex.EncodeToString(p.Preimage)
		tags := nostr.Tags{{"tip", t.ID}, {"amount", strconv.FormatInt(t.AmountMsat, 10)}, {"preimage", pre}, {"payment_hash", hash}}
		if t.InvoiceMessageID != "" {
			tags = append(tags, nostr.Tag{"e", t.InvoiceMessageID})
		}
		if t.Keysend {
			tags = append(tags, nostr.Tag{"keysend", "1"})
		}
		err := e.tx(ctx, func(tx *sql.Tx) error {
			res, err := tx.ExecContext(ctx, `UPDATE tips SET state = CASE WHEN receipt = 1 THEN 'settled' ELSE 'paid' END, preimage = ?, fee_msat = ?, done_ms = ?, updated_ms = ?, last_error = ''
				WHERE id = ? AND dir = 'out' AND peer = ? AND state = 'paying'`, pre, p.FeeMsat, now, now, t.ID, t.Peer)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				return nil
			}
			return enqueue(ctx, tx, t.ID, "out", t.Peer, chat.KindTipReceipt, "paid "+fmtMsat(t.AmountMsat), tags)
		})
		if err != nil {
			return fmt.Errorf("payments: %w", err)
		}
		e.log.Info("tip paid", "tip", t.ID, "payment_hash", hash, "fee_msat", p.FeeMsat)
	case PaymentFailed:
		reason := p.Failure
		err := e.tx(ctx, func(tx *sql.Tx) error {
			res, err := tx.ExecContext(ctx, `UPDATE tips SET state = 'failed', reason = ?, updated_ms = ?, last_error = ''
				WHERE id = ? AND dir = 'out' AND peer = ? AND state = 'paying'`, reason, now, t.ID, t.Peer)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				return nil
			}
			return enqueue(ctx, tx, t.ID, "out", t.Peer, chat.KindTipStatus, reason, nostr.Tags{{"tip", t.ID}, {"state", string(StateFailed)}})
		})
		if err != nil {
			return fmt.Errorf("payments: %w", err)
		}
		e.log.Info("tip payment failed", "tip", t.ID, "reason", reason)
	default:
		return fmt.Errorf("payments: payment %s still %s", hash, p.Status)
	}
	e.kick() // the worker hands the message to chat
	e.notify(t.ID, "out", t.Peer)
	return nil
}

// ---- LND invoice subscription (recipient: settlement) ----

func (e *Engine) invoiceLoop() {
	defer e.wg.Done()
	delay := e.cfg.RetryBase
	for e.ctx.Err() == nil {
		err := e.subscribeOnce()
		if e.ctx.Err() != nil {
			return
		}
		e.healthMu.Lock()
		e.health.InvoiceStream = false
		if err != nil {
			e.health.LNDError = err.Error()
		}
		e.healthMu.Unlock()
		e.log.Warn("invoice subscription ended, resubscribing", "err", err, "in", delay)
		select {
		case <-e.ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, e.cfg.RetryMax)
		if err == nil {
			delay = e.cfg.RetryBase
		}
	}
}

func (e *Engine) subscribeOnce() error {
	ctx := e.ctx
	addIdx, err := cursor(ctx, e.st.db, "add_index")
	if err != nil {
		return err
	}
	setIdx, err := cursor(ctx, e.st.db, "settle_index")
	if err != nil {
		return err
	}
	// Probe first so a dead LND is reported, and reconcile open tip
	// invoices (settled while the stream was down and before any index
	// was recorded).
	if _, err := e.ln.Info(ctx); err != nil {
		return err
	}
	if err := e.Reconcile(ctx); err != nil {
		return err
	}
	go func() { // and once more after the stream is up, to close the gap
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
			if err := e.Reconcile(ctx); err != nil && ctx.Err() == nil {
				e.log.Warn("reconcile invoices", "err", err)
			}
		}
	}()
	e.healthMu.Lock()
	e.health.InvoiceStream, e.health.LNDError = true, ""
	e.healthMu.Unlock()
	return e.ln.SubscribeInvoices(ctx, addIdx, setIdx, func(inv *Invoice) error {
		if err := e.onInvoiceUpdate(ctx, inv); err != nil {
			return err
		}
		return nil
	})
}

// Reconcile checks every incoming tip with an open invoice against LND
// (after an outage, in addition to the subscription's replay).
func (e *Engine) Reconcile(ctx context.Context) error {
	ts, err := queryTips(ctx, e.st.db, `WHERE dir = 'in' AND state IN ('invoiced', 'paid') AND payment_hash != ''`)
	if err != nil {
		return err
	}
	for _, t := range ts {
		h, _ := hex.DecodeString(t.PaymentHash)
		inv, err := e.ln.LookupInvoice(ctx, h)
		if err != nil {
			if errors.Is(err, ErrUnavailable) {
				return err
			}
			continue
		}
		if err := e.applyInvoice(ctx, inv, false); err != nil {
			return err
		}
	}
	// Waiting receipts name payments LND may have settled as keysends.
	rows, err := e.st.db.QueryContext(ctx, `SELECT preimage FROM early_receipts`)
	if err != nil {
		return err
	}
	var hashes [][]byte
	for rows.Next() {
		var preHex string
		if err := rows.Scan(&preHex); err != nil {
			rows.Close()
			return err
		}
		pre, _ := hex.DecodeString(preHex)
		h := sha256.Sum256(pre)
		hashes = append(hashes, h[:])
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, h := range hashes {
		if err := e.lookupKeysend(ctx, h); errors.Is(err, ErrUnavailable) {
			return err
		}
	}
	return nil
}

// onInvoiceUpdate applies an update of the invoice stream and moves the
// cursors the stream resumes from past it.
func (e *Engine) onInvoiceUpdate(ctx context.Context, inv *Invoice) error {
	return e.applyInvoice(ctx, inv, true)
}

// applyInvoice settles the tip of a settled invoice. Only the stream's
// updates (stream) move the cursors: LND streams them in index order, and
// an invoice looked up out of that order (Reconcile) would move them past
// settlements the stream has not delivered yet, which a later subscription
// would then never replay.
func (e *Engine) applyInvoice(ctx context.Context, inv *Invoice, stream bool) error {
	hash := hex.EncodeToString(inv.PaymentHash)
	var id, peer string
	var settledNow bool
	err := e.tx(ctx, func(tx *sql.Tx) error {
		if stream {
			if err := setCursorMax(ctx, tx, "add_index", inv.AddIndex); err != nil {
				return err
			}
		}
		if inv.State != InvoiceSettled {
			return nil
		}
		if stream {
			if err := setCursorMax(ctx, tx, "settle_index", inv.SettleIndex); err != nil {
				return err
			}
		}
		now := e.now().UnixMilli()
		if inv.Keysend {
			var rec tipRecord
			raw, ok := inv.CustomRecords[RecordTip]
			if !ok || json.Unmarshal(raw, &rec) != nil || !isHex(rec.Tip, 32) || !nostr.IsValidPublicKey(rec.From) || rec.From == e.me {
				return nil // a keysend that is not a tip (we do not tip ourselves)
			}
			id, peer = rec.Tip, rec.From
			conv := chat.ConversationID([]string{e.me, peer})
			// The record's sender is not authenticated by LND; the tip shows
			// as theirs and the chat request/receipt (sealed) confirm it.
			if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO tips(id, dir, peer, conversation, amount_msat, state, request_id, created_ms, updated_ms)
				VALUES(?, 'in', ?, ?, ?, 'requested', ?, ?, ?)`, id, peer, conv, inv.AmountPaidMsat, rec.Request, now, now); err != nil {
				return err
			}
			t, err := getTip(ctx, tx, id, "in", peer)
			if err != nil {
				return err
			}
			if t.State == StateSettled {
				return nil
			}
			cancel := 0
			if t.PaymentHash != "" && t.PaymentHash != hash && (t.State == StateInvoiced || t.cancelInvoice) {
				// Our unpaid invoice for the same tip, or one whose
				// cancellation (the tip was cancelled) has not run yet.
				cancel = 1
			}
			// Our invoice's hash, which the keysend's replaces, is kept for
			// the cancellation (SQLite reads the row as it was before the
			// UPDATE), and the cancellation runs now, not at the expiry
			// check makeInvoice scheduled.
			if _, err := tx.ExecContext(ctx, `UPDATE tips SET state = 'settled', keysend = 1, payment_hash = ?, amount_msat = ?, cancel_inv = ?,
				cancel_hash = CASE WHEN ? = 1 THEN payment_hash ELSE cancel_hash END, next_ms = 0, attempts = 0,
				bolt11 = CASE WHEN bolt11 = '' THEN 'keysend' ELSE bolt11 END, done_ms = ?, updated_ms = ?, reason = '', last_error = ''
				WHERE id = ? AND dir = 'in' AND peer = ?`, hash, inv.AmountPaidMsat, cancel, cancel, now, now, id, peer); err != nil {
				return err
			}
			if err := applyEarlyReceipt(ctx, tx, id, peer, hash); err != nil {
				return err
			}
			settledNow = true
		} else {
			ts, err := queryTips(ctx, tx, `WHERE dir = 'in' AND payment_hash = ?`, hash)
			if err != nil || len(ts) == 0 {
				return err
			}
			t := ts[0]
			if t.State == StateSettled {
				return nil
			}
			id, peer = t.ID, t.Peer
			if _, err := tx.ExecContext(ctx, `UPDATE tips SET state = 'settled', done_ms = ?, updated_ms = ?, reason = '', last_error = ''
				WHERE id = ? AND dir = 'in' AND peer = ?`, now, now, id, peer); err != nil {
				return err
			}
			settledNow = true
		}
		return enqueue(ctx, tx, id, "in", peer, chat.KindTipStatus, "settled", nostr.Tags{{"tip", id}, {"state", string(StateSettled)}})
	})
	if err != nil {
		return fmt.Errorf("payments: invoice update: %w", err)
	}
	if settledNow {
		e.log.Info("tip settled in LND", "tip", id, "from", peer, "keysend", inv.Keysend)
		e.kick() // the worker hands the message to chat
		e.notify(id, "in", peer)
	}
	return nil
}

// maxPeerReason bounds what a peer's status message may say about a tip.
const maxPeerReason = 300

// clipReason is a peer's reason as kept: valid UTF-8, at most
// maxPeerReason bytes, cut between characters.
func clipReason(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxPeerReason {
		return s
	}
	n := maxPeerReason
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
