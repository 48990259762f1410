// Package nostrclient is the node's NIP-01 / NIP-42 client for outside
// relays: publish (success only on an explicit OK true), query up to EOSE,
// live subscriptions, and AUTH answered with the caller's signer. The
// relay is not trusted: frames it should not send are ignored, and what it
// sends before EOSE is bounded.
//
// The node uses it instead of go-nostr's Relay, whose Close races with its
// own connection goroutine (v0.52.3 sets Relay.Connection to nil while
// Close reads it; the race detector reports it and, rarely, Close
// dereferences nil and panics, go-nostr issue #130). Here the websocket is
// set once at Dial and never cleared, so Close and a lost connection can
// happen in any order.
package nostrclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anchorchat/anchorchat/internal/eventsig"
	"github.com/coder/websocket"
	"github.com/nbd-wtf/go-nostr"
)

// Dialer opens a websocket to a relay URL. Options.Dial replaces the
// default (websocket.Dial), e.g. in tests to make a relay unreachable.
type Dialer func(ctx context.Context, url string) (*websocket.Conn, error)

func defaultDial(ctx context.Context, url string) (*websocket.Conn, error) {
	ws, _, err := websocket.Dial(ctx, url, nil)
	return ws, err
}

// RejectedError is a relay's OK false answer. Permanent reports whether
// retrying cannot help (the NIP-01 prefixes invalid:, blocked:,
// restricted: and pow:, none of which change by waiting; a duplicate: comes
// with OK true, which Publish counts as stored).
type RejectedError struct {
	Relay, Reason string
}

func (e *RejectedError) Error() string { return fmt.Sprintf("relay %s refused: %s", e.Relay, e.Reason) }

// Permanent reports whether the refusal will not change on retry.
func (e *RejectedError) Permanent() bool {
	for _, p := range []string{"invalid:", "blocked:", "restricted:", "pow:"} {
		if strings.HasPrefix(e.Reason, p) {
			return true
		}
	}
	return false
}

type okResult struct {
	ok     bool
	reason string
}

// Options configures Dial. The zero value dials with websocket.Dial, cannot
// answer AUTH, and takes the default limits.
type Options struct {
	Dial Dialer                   // default websocket.Dial
	Sign func(*nostr.Event) error // signs AUTH events; nil: never authenticate
	// A subscription whose relay sends more stored events (before EOSE)
	// than MaxStoredEvents, or more than MaxStoredBytes of them, fails
	// instead of growing without bound (defaults 10,000 and 64 MiB).
	MaxStoredEvents int
	MaxStoredBytes  int
}

// Default limits on what a relay may send before EOSE.
const (
	DefaultMaxStoredEvents = 10_000
	DefaultMaxStoredBytes  = 64 << 20
)

// Conn is one websocket to one relay. It is safe for concurrent use.
type Conn struct {
	url  string
	ws   *websocket.Conn
	sign func(*nostr.Event) error

	ctx    context.Context
	cancel context.CancelCauseFunc

	maxStored, maxStoredBytes int

	mu        sync.Mutex
	oks       map[string][]chan okResult // by event id, in the order sent
	subs      map[string]*Subscription
	challenge string
	chalCh    chan struct{} // closed when the first challenge arrives
	chalOnce  sync.Once
	authed    bool
	subSeq    atomic.Int64
}

// Subscription is an open REQ. Stored holds the events the relay sent
// before EOSE; Events delivers the live ones after it.
type Subscription struct {
	id       string
	filters  nostr.Filters
	events   chan *nostr.Event
	eose     chan struct{}
	closed   chan string // CLOSED reason
	eoseOnce sync.Once
	overflow chan struct{} // closed when the relay sent too much before EOSE
	ended    chan struct{} // closed when the relay sends CLOSED after EOSE
	reason   string        // that CLOSED's message, set before ended is closed
	gone     chan struct{} // closed by Unsubscribe, so an unread subscription never stalls the connection
	goneOnce sync.Once

	// Kept by the reader alone.
	eoseSeen             bool
	storedN, storedBytes int // before EOSE

	Stored []*nostr.Event
}

// Dial opens a websocket to url. The connection lives until Close or until
// the relay drops it (see Done); ctx bounds only the dial.
func Dial(ctx context.Context, url string, opts Options) (*Conn, error) {
	dial, sign := opts.Dial, opts.Sign
	if dial == nil {
		dial = defaultDial
	}
	ws, err := dial(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", url, err)
	}
	ws.SetReadLimit(4 << 20)
	cctx, cancel := context.WithCancelCause(context.Background())
	c := &Conn{
		url: url, ws: ws, sign: sign, ctx: cctx, cancel: cancel,
		maxStored: opts.MaxStoredEvents, maxStoredBytes: opts.MaxStoredBytes,
		oks: make(map[string][]chan okResult), subs: make(map[string]*Subscription),
		chalCh: make(chan struct{}),
	}
	if c.maxStored <= 0 {
		c.maxStored = DefaultMaxStoredEvents
	}
	if c.maxStoredBytes <= 0 {
		c.maxStoredBytes = DefaultMaxStoredBytes
	}
	go c.readLoop()
	return c, nil
}

// Done is closed when the connection is gone.
func (c *Conn) Done() <-chan struct{} { return c.ctx.Done() }

// Err says why the connection ended.
func (c *Conn) Err() error { return context.Cause(c.ctx) }

// URL is the relay's address as dialled.
func (c *Conn) URL() string { return c.url }

// Events delivers the subscription's events after EOSE, until the
// connection ends, the relay ends the subscription (Ended) or Unsubscribe.
func (s *Subscription) Events() <-chan *nostr.Event { return s.events }

// Ended is closed when the relay ends the subscription with CLOSED after
// EOSE; Reason then says why. A caller keeping a subscription open should
// watch it along with the connection's Done.
func (s *Subscription) Ended() <-chan struct{} { return s.ended }

// Reason is the relay's CLOSED message, once Ended is closed.
func (s *Subscription) Reason() string {
	select {
	case <-s.ended:
		return s.reason
	default:
		return ""
	}
}

// Close ends the connection (a normal websocket close).
func (c *Conn) Close() {
	c.cancel(errors.New("closed"))
	_ = c.ws.Close(websocket.StatusNormalClosure, "")
}

func (c *Conn) readLoop() {
	defer func() {
		_ = c.ws.CloseNow()
	}()
	for {
		_, data, err := c.ws.Read(c.ctx)
		if err != nil {
			c.cancel(fmt.Errorf("relay %s: connection lost: %w", c.url, err))
			return
		}
		if !c.handleFrame(data) {
			return
		}
	}
}

// handleFrame acts on one frame from the relay. Frames that are not JSON,
// verbs a client does not expect and messages for unknown subscriptions or
// events are ignored. It returns false once the connection is closed.
func (c *Conn) handleFrame(data []byte) bool {
	env := nostr.ParseMessage(string(data))
	switch e := env.(type) {
	case *nostr.OKEnvelope:
		// The relay answers each EVENT in turn: the first caller still
		// waiting for this id gets this OK.
		c.mu.Lock()
		var ch chan okResult
		if q := c.oks[e.EventID]; len(q) > 0 {
			ch = q[0]
			c.removeOK(e.EventID, ch)
		}
		c.mu.Unlock()
		if ch != nil {
			ch <- okResult{e.OK, e.Reason}
		}
	case *nostr.EventEnvelope:
		if e.SubscriptionID == nil {
			return true
		}
		c.mu.Lock()
		s := c.subs[*e.SubscriptionID]
		c.mu.Unlock()
		if s == nil {
			return true
		}
		if !s.eoseSeen {
			s.storedN++
			s.storedBytes += len(data)
			if s.storedN > c.maxStored || s.storedBytes > c.maxStoredBytes {
				// Stop collecting: drop the subscription and tell the relay.
				c.mu.Lock()
				delete(c.subs, s.id)
				c.mu.Unlock()
				close(s.overflow)
				go c.sendClose(s.id)
				return true
			}
		}
		evt := e.Event
		// Only what was asked for, with a valid id and signature: the relay
		// is not trusted to filter, and a copy under a broken signature
		// must not stand in for the genuine event.
		if !s.filters.Match(&evt) || !eventsig.Valid(&evt) {
			return true
		}
		select {
		case s.events <- &evt:
		case <-s.gone:
		case <-c.ctx.Done():
			return false
		}
	case *nostr.EOSEEnvelope:
		c.mu.Lock()
		s := c.subs[string(*e)]
		c.mu.Unlock()
		if s != nil {
			s.eoseSeen = true
			s.eoseOnce.Do(func() { close(s.eose) })
		}
	case *nostr.ClosedEnvelope:
		c.mu.Lock()
		s := c.subs[e.SubscriptionID]
		delete(c.subs, e.SubscriptionID)
		c.mu.Unlock()
		switch {
		case s == nil:
		case s.eoseSeen: // a live subscription the caller is reading
			s.reason = e.Reason
			close(s.ended)
		default: // Subscribe is waiting for EOSE
			s.closed <- e.Reason
		}
	case *nostr.AuthEnvelope:
		if e.Challenge == nil {
			return true
		}
		c.mu.Lock()
		c.challenge = *e.Challenge // the newest one counts
		c.mu.Unlock()
		c.chalOnce.Do(func() { close(c.chalCh) })
	}
	return true
}

func (c *Conn) write(ctx context.Context, v any) error {
	// coder/websocket closes the connection when a write starts with a
	// context already done: one caller out of time must not take the
	// connection from the others sharing it.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("relay %s: write: %w", c.url, err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := c.ws.Write(ctx, websocket.MessageText, b); err != nil {
		return fmt.Errorf("relay %s: write: %w", c.url, err)
	}
	return nil
}

// send writes a frame carrying an event (EVENT or AUTH) and waits for its OK.
func (c *Conn) send(ctx context.Context, verb string, evt *nostr.Event) error {
	// Another caller may be waiting for an OK of the same id (the same
	// event published twice, two AUTH events signed in the same second):
	// each waits in its own place.
	ch := make(chan okResult, 1)
	c.mu.Lock()
	c.oks[evt.ID] = append(c.oks[evt.ID], ch)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.removeOK(evt.ID, ch)
		c.mu.Unlock()
	}()
	if err := c.write(ctx, []any{verb, evt}); err != nil {
		return err
	}
	select {
	case r := <-ch:
		if !r.ok {
			return &RejectedError{Relay: c.url, Reason: r.reason}
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("relay %s: waiting for OK: %w", c.url, ctx.Err())
	case <-c.ctx.Done():
		return fmt.Errorf("relay %s: no OK before the connection ended: %w", c.url, context.Cause(c.ctx))
	}
}

// removeOK takes ch off the waiters for id's OK, if it is still there. c.mu is held.
func (c *Conn) removeOK(id string, ch chan okResult) {
	q := c.oks[id]
	for i, w := range q {
		if w == ch {
			q = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	if len(q) == 0 {
		delete(c.oks, id)
	} else {
		c.oks[id] = q
	}
}

// Auth answers the relay's NIP-42 challenge (waiting for one if needed).
func (c *Conn) Auth(ctx context.Context) error {
	if c.sign == nil {
		return errors.New("no signer for AUTH")
	}
	c.mu.Lock()
	done := c.authed
	c.mu.Unlock()
	if done {
		return nil
	}
	select {
	case <-c.chalCh:
	case <-ctx.Done():
		return fmt.Errorf("relay %s: waiting for AUTH challenge: %w", c.url, ctx.Err())
	case <-c.ctx.Done():
		return fmt.Errorf("relay %s: %w", c.url, context.Cause(c.ctx))
	}
	c.mu.Lock()
	chal := c.challenge
	c.mu.Unlock()
	evt := &nostr.Event{
		Kind: nostr.KindClientAuthentication, CreatedAt: nostr.Now(),
		Tags: nostr.Tags{{"relay", c.url}, {"challenge", chal}},
	}
	if err := c.sign(evt); err != nil {
		return fmt.Errorf("sign AUTH: %w", err)
	}
	if err := c.send(ctx, "AUTH", evt); err != nil {
		return fmt.Errorf("AUTH: %w", err)
	}
	c.mu.Lock()
	c.authed = true
	c.mu.Unlock()
	return nil
}

// Publish sends evt and returns nil only when the relay answered OK true.
// An auth-required: refusal is answered with AUTH and one retry.
func (c *Conn) Publish(ctx context.Context, evt *nostr.Event) error {
	err := c.send(ctx, "EVENT", evt)
	var rej *RejectedError
	if errors.As(err, &rej) && strings.HasPrefix(rej.Reason, "auth-required:") && c.sign != nil {
		if aerr := c.Auth(ctx); aerr != nil {
			return fmt.Errorf("%w (then %v)", err, aerr)
		}
		err = c.send(ctx, "EVENT", evt)
	}
	return err
}

// newSubscription registers a subscription under id, for the reader to feed.
func (c *Conn) newSubscription(id string, filters nostr.Filters) *Subscription {
	s := &Subscription{
		id:       id,
		filters:  filters,
		events:   make(chan *nostr.Event, 256),
		eose:     make(chan struct{}),
		closed:   make(chan string, 1),
		gone:     make(chan struct{}),
		overflow: make(chan struct{}),
		ended:    make(chan struct{}),
	}
	c.mu.Lock()
	c.subs[id] = s
	c.mu.Unlock()
	return s
}

// Subscribe opens a subscription; on auth-required: it authenticates and
// re-subscribes once. The returned subscription's Events are fed until the
// connection ends, the relay ends it (Ended) or Unsubscribe.
func (c *Conn) Subscribe(ctx context.Context, filters ...nostr.Filter) (*Subscription, error) {
	for attempt := 0; ; attempt++ {
		s := c.newSubscription("s"+strconv.FormatInt(c.subSeq.Add(1), 10), filters)
		msg := []any{"REQ", s.id}
		for _, f := range filters {
			msg = append(msg, f)
		}
		if err := c.write(ctx, msg); err != nil {
			// Not sent (or the connection is failing): nothing to CLOSE.
			s.goneOnce.Do(func() { close(s.gone) })
			c.mu.Lock()
			delete(c.subs, s.id)
			c.mu.Unlock()
			return nil, err
		}
	wait:
		select {
		case e := <-s.events:
			s.Stored = append(s.Stored, e)
			goto wait
		case <-s.eose:
			for {
				select {
				case e := <-s.events:
					s.Stored = append(s.Stored, e)
				default:
					return s, nil
				}
			}
		case reason := <-s.closed:
			if strings.HasPrefix(reason, "auth-required:") && attempt == 0 && c.sign != nil {
				if err := c.Auth(ctx); err != nil {
					return nil, err
				}
				continue
			}
			return nil, fmt.Errorf("relay %s closed the subscription: %s", c.url, reason)
		case <-s.overflow:
			return nil, fmt.Errorf("relay %s sent more than %d stored events or %d bytes before EOSE; subscription dropped", c.url, c.maxStored, c.maxStoredBytes)
		case <-ctx.Done():
			c.Unsubscribe(s)
			return nil, fmt.Errorf("relay %s: waiting for EOSE: %w", c.url, ctx.Err())
		case <-c.ctx.Done():
			return nil, fmt.Errorf("relay %s: %w", c.url, context.Cause(c.ctx))
		}
	}
}

// Unsubscribe sends CLOSE and forgets the subscription; events still
// arriving for it are dropped.
func (c *Conn) Unsubscribe(s *Subscription) {
	s.goneOnce.Do(func() { close(s.gone) })
	c.mu.Lock()
	_, ok := c.subs[s.id]
	delete(c.subs, s.id)
	c.mu.Unlock()
	if ok {
		c.sendClose(s.id)
	}
}

// sendClose tells the relay to end subscription id, waiting at most a second.
func (c *Conn) sendClose(id string) {
	ctx, cancel := context.WithTimeout(c.ctx, time.Second)
	_ = c.write(ctx, []any{"CLOSE", id})
	cancel()
}

// Query returns the stored events matching filters (up to EOSE).
func (c *Conn) Query(ctx context.Context, filters ...nostr.Filter) ([]*nostr.Event, error) {
	s, err := c.Subscribe(ctx, filters...)
	if err != nil {
		return nil, err
	}
	c.Unsubscribe(s)
	return s.Stored, nil
}
