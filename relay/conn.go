package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/nbd-wtf/go-nostr"
	"github.com/tidwall/gjson"

	"github.com/anchorchat/anchorchat/storage"
)

const (
	// outQueue is how many frames may wait for a client. A client that lets
	// this many pile up under live traffic is too slow and is disconnected.
	outQueue = 4096
	// outReserve of those places are kept for the frames that cannot wait
	// (live events, the OKs of committed events): the frames the handler
	// sends itself (stored results above all, up to 16 × max_limit for one
	// REQ) wait while the queue holds outQueue - outReserve.
	outReserve = 1024
	// outBytes bounds the bytes of the frames the handler queues (stored
	// results): a REQ for large events waits at this much, not at
	// outQueue - outReserve copies of them.
	outBytes = 4 << 20
	// maxOutBytes is the most a client may let pile up in all (live events
	// and OKs on top of outBytes); past it, it is too slow and is dropped,
	// as past outQueue frames.
	maxOutBytes = 16 << 20
	// maxPendingSaves bounds the EVENTs of one connection awaiting commit;
	// beyond it the connection's handler waits, then its reader (backpressure
	// on the socket).
	maxPendingSaves = 2048
)

type conn struct {
	r         *Relay
	ws        *websocket.Conn
	co        *coalescer
	ip        string
	exempt    bool     // not held to the per-IP limits (Relay.Exempt)
	urls      []string // what an AUTH event's relay tag may name
	challenge string

	ctx    context.Context
	cancel context.CancelFunc
	out    chan []byte
	queued atomic.Int64  // bytes of the frames in out
	taken  chan struct{} // a frame left out: wakes a send waiting for room
	// dropping is set when trySend found the queue full and closes the connection.
	dropping atomic.Bool
	saves    chan struct{} // semaphore of pending saves
	once     sync.Once
	heard    atomic.Int64 // when the client was last heard from (unix ns): a frame or a pong

	mu     sync.RWMutex
	authed []string // pubkeys authenticated with NIP-42
	subs   map[string]subscription
}

func newConn(r *Relay, ws *websocket.Conn, co *coalescer, ip string, urls []string) *conn {
	ctx, cancel := context.WithCancel(r.ctx)
	var ch [16]byte
	_, _ = rand.Read(ch[:])
	return &conn{
		r: r, ws: ws, co: co, ip: ip, urls: urls,
		challenge: hex.EncodeToString(ch[:]),
		ctx:       ctx, cancel: cancel,
		out:   make(chan []byte, outQueue),
		taken: make(chan struct{}, 1),
		saves: make(chan struct{}, maxPendingSaves),
		subs:  make(map[string]subscription),
	}
}

// close says goodbye with a close frame and drops the connection, which
// also ends the reader, handler and writer goroutines.
func (c *conn) close(code int, reason string) {
	c.once.Do(func() {
		c.cancel()
		_ = c.co.flush() // held bytes first, then the close frame after them
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
		_ = c.ws.Close()
	})
}

// shutdownGrace is how long the relay's Close gives a connection to say
// goodbye before it closes the socket under it.
const shutdownGrace = 2 * time.Second

// shutdown closes the connection for the relay's Close. A client that reads
// nothing holds the writer in a write, and close's flush behind it, until
// the write timeout (Config.WriteTimeout, 30 s by default), and Close waits
// for every connection: after shutdownGrace the socket is closed, which
// ends that write.
func (c *conn) shutdown() {
	t := time.AfterFunc(shutdownGrace, func() { _ = c.ws.Close() })
	defer t.Stop()
	c.close(websocket.CloseGoingAway, "relay shutting down")
}

// serve runs the connection: a writer goroutine drains c.out while this
// goroutine reads frames and a handler goroutine acts on them (readLoop).
func (c *conn) serve() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.writeLoop()
	}()
	c.ws.SetReadLimit(c.r.cfg.Limits.hardMessageLimit())
	c.hear()
	c.ws.SetPongHandler(func(string) error { c.hear(); return nil })
	c.send(frame("AUTH", c.challenge))
	c.readLoop()
	c.close(websocket.CloseNormalClosure, "")
	<-done
}

// hear records that the client was heard from just now.
func (c *conn) hear() { c.heard.Store(time.Now().UnixNano()) }

// keepalive is run by the writer at each tick of its ping ticker: it pings
// a client silent for an interval, and closes one silent for two (its
// ping went unanswered). It reports whether the connection goes on.
func (c *conn) keepalive(interval time.Duration) bool {
	silent := time.Since(time.Unix(0, c.heard.Load()))
	switch {
	case silent >= 2*interval:
		c.r.log.Debug("client silent; closing its connection", "ip", c.ip, "silent", silent.Round(time.Second))
		go c.close(websocket.CloseGoingAway, "no answer to ping")
		return false
	case silent >= interval:
		c.co.setHold(false) // the ping goes out now, with anything held before it
		if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.writeTimeout())); err != nil {
			go c.close(websocket.CloseInternalServerErr, "write failed")
			return false
		}
	}
	return true
}

// writeTimeout is Config.WriteTimeout or its default.
func (c *conn) writeTimeout() time.Duration {
	if d := c.r.cfg.WriteTimeout; d > 0 {
		return d
	}
	return DefaultWriteTimeout
}

func (c *conn) writeLoop() {
	defer c.co.flush() // never leave bytes held (the close frame follows)
	var tick <-chan time.Time
	interval := c.r.cfg.PingInterval
	if interval == 0 {
		interval = DefaultPingInterval
	}
	if interval > 0 {
		// Ticks at half the interval: a client is pinged after between
		// one and one and a half intervals of silence, closed after two.
		t := time.NewTicker(interval / 2)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-tick:
			if !c.keepalive(interval) {
				return
			}
		case msg := <-c.out:
			c.queued.Add(-int64(len(msg)))
			select {
			case c.taken <- struct{}{}:
			default:
			}
			// Hold the bytes while more messages are queued: the write of the
			// last one carries the whole burst in one syscall.
			c.co.setHold(len(c.out) > 0)
			// A client that stops reading blocks the socket write: the deadline
			// ends it (cheaper than a context with a timer per message).
			_ = c.ws.SetWriteDeadline(time.Now().Add(c.writeTimeout()))
			err := c.ws.WriteMessage(websocket.TextMessage, msg)
			if err != nil {
				c.close(websocket.CloseInternalServerErr, "write failed")
				return
			}
		}
	}
}

// inbox is how many parsed messages may wait between a connection's reader
// and its handler, and readAhead how many bytes of frames: a larger frame
// waits until the handler has taken everything before it.
const (
	inbox     = 64
	readAhead = 512 << 10
)

// maxSigBatch is how many consecutive EVENTs the handler checks together.
const maxSigBatch = 32

// inbound is one frame from the reader to the handler: a parsed message, or
// why the frame cannot be used.
type inbound struct {
	msg   *ClientMessage // may be set with err, for the sub id
	err   *ParseError
	label string // the messages metric's label for a refused frame; "" counts nothing
	size  int64  // the frame's bytes, held against readAhead until handled
}

// readLoop reads and parses frames and hands them, in order, to a handler
// goroutine. The two overlap: while the handler checks a run of signatures,
// the reader parses what follows, and the handler takes all the EVENTs that
// arrived meanwhile as the next batch (handleEvents).
func (c *conn) readLoop() {
	in := make(chan inbound, inbox)
	ahead := newBudget(readAhead)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			// On the reader's goroutine net/http would have caught a panic
			// and dropped only this connection; so does this.
			if p := recover(); p != nil {
				c.r.log.Error("panic handling a client message; closing the connection", "ip", c.ip, "panic", p, "stack", string(debug.Stack()))
				c.close(websocket.CloseInternalServerErr, "error: internal error")
			}
		}()
		c.handleLoop(in, ahead)
	}()
	defer func() {
		close(in) // the handler finishes what was read, then returns
		<-done
	}()
	limit := int64(c.r.cfg.Limits.MaxMessageLength)
	buf := new(bytes.Buffer)
	for {
		typ, rd, err := c.ws.NextReader()
		if err != nil {
			return
		}
		c.hear()
		buf.Reset()
		n, err := io.Copy(buf, io.LimitReader(rd, limit+1))
		if err != nil {
			return
		}
		var m inbound
		switch {
		case n > limit:
			// Too large: drain it without keeping it, answer, and carry on.
			if _, err := io.Copy(io.Discard, rd); err != nil {
				return
			}
			m.label = "oversized"
			m.err = &ParseError{Msg: fmt.Sprintf("invalid: message too large (max %d bytes)", limit)}
			if id := eventIDHint(buf.Bytes()); id != "" && bytes.Contains(buf.Bytes()[:min(buf.Len(), 64)], []byte(`"EVENT"`)) {
				m.err.EventID = id
			}
		case typ != websocket.TextMessage:
			m.err = &ParseError{Msg: "invalid: only text frames carry Nostr messages"}
		default:
			msg, err := ParseClientMessage(buf.Bytes()) // copies what it keeps
			m.msg, m.size = msg, int64(buf.Len())
			if err != nil {
				m.label = "invalid"
				if !errors.As(err, &m.err) {
					m.err = &ParseError{Msg: "invalid: " + err.Error()}
				}
			}
		}
		if ahead.acquire(c.ctx, m.size) != nil {
			return
		}
		select {
		case in <- m:
		case <-c.ctx.Done():
			return
		}
	}
}

// handleLoop handles the reader's messages in order until in is closed or
// the connection ends, releasing each one's bytes to ahead once handled.
// Consecutive EVENTs already waiting are handled as one batch.
func (c *conn) handleLoop(in <-chan inbound, ahead *budget) {
	var (
		next  inbound
		held  bool
		batch []*nostr.Event
	)
	for {
		if c.ctx.Err() != nil {
			return // nothing more can be answered
		}
		m := next
		if held {
			held = false
		} else {
			var ok bool
			if m, ok = <-in; !ok {
				return
			}
		}
		if m.err != nil || m.msg.Verb != VerbEvent {
			c.handle(m)
			ahead.release(m.size)
			continue
		}
		batch = append(batch[:0], m.msg.Event)
		size := m.size
	collect:
		for len(batch) < maxSigBatch {
			select {
			case m, ok := <-in:
				if !ok {
					break collect // the next receive sees the close too
				}
				if m.err == nil && m.msg.Verb == VerbEvent {
					batch = append(batch, m.msg.Event)
					size += m.size
					continue
				}
				next, held = m, true
				break collect
			default:
				break collect
			}
		}
		c.r.m.Messages.WithLabelValues(string(VerbEvent)).Add(float64(len(batch)))
		c.handleEvents(batch)
		clear(batch) // let the events go once their saves are queued
		ahead.release(size)
	}
}

// handle answers one message that is not an EVENT (handleEvents takes those).
func (c *conn) handle(m inbound) {
	if pe := m.err; pe != nil {
		if m.label != "" {
			c.r.m.Messages.WithLabelValues(m.label).Inc()
		}
		msg := m.msg
		switch {
		case pe.EventID != "":
			c.reject(pe.EventID, pe.Msg)
		case msg != nil && msg.SubID != "" && msg.Verb == VerbReq:
			c.refuseReq(msg.SubID, pe.Msg)
		case msg != nil && msg.SubID != "":
			c.send(frame("CLOSED", msg.SubID, pe.Msg))
		default:
			c.send(frame("NOTICE", pe.Msg))
		}
		return
	}
	msg := m.msg
	c.r.m.Messages.WithLabelValues(string(msg.Verb)).Inc()
	switch msg.Verb {
	case VerbReq:
		c.handleReq(msg.SubID, msg.Filters)
	case VerbCount:
		c.handleCount(msg.SubID, msg.Filters)
	case VerbClose:
		c.dropSub(msg.SubID)
	case VerbAuth:
		c.handleAuth(msg.Event)
	}
}

// dropSub ends subscription subID, if it is open.
func (c *conn) dropSub(subID string) {
	c.mu.Lock()
	_, had := c.subs[subID]
	delete(c.subs, subID)
	c.mu.Unlock()
	if had {
		c.r.m.Subscriptions.Dec()
	}
}

// refuseReq answers a REQ with CLOSED. A subscription the REQ would have
// replaced ends too: CLOSED says the id is closed, so nothing more may
// arrive under it.
func (c *conn) refuseReq(subID, msg string) {
	c.dropSub(subID)
	c.send(frame("CLOSED", subID, msg))
}

// send queues a frame from the handler's goroutine (the only one that calls
// it), waiting while the queue is full but for the places kept for trySend,
// or holds outBytes.
func (c *conn) send(msg []byte) {
	for len(c.out) >= outQueue-outReserve || c.queued.Load() >= outBytes {
		select {
		case <-c.taken:
		case <-c.ctx.Done():
			return
		}
	}
	c.queued.Add(int64(len(msg)))
	select {
	case c.out <- msg:
	case <-c.ctx.Done():
		c.queued.Add(-int64(len(msg)))
	}
}

// trySend queues a frame without waiting; a client too slow to keep up
// (outQueue frames or maxOutBytes queued) is dropped. While no more than
// the handler's outBytes wait, a frame goes in whatever its size: an
// operator may allow events larger than maxOutBytes.
func (c *conn) trySend(msg []byte) {
	if q := c.queued.Load(); q > outBytes && q+int64(len(msg)) > maxOutBytes {
		c.dropSlow(fmt.Sprintf("too slow: %d MiB queued", maxOutBytes>>20))
		return
	}
	c.queued.Add(int64(len(msg)))
	select {
	case c.out <- msg:
	case <-c.ctx.Done():
		c.queued.Add(-int64(len(msg)))
	default:
		c.queued.Add(-int64(len(msg)))
		c.dropSlow("too slow: " + fmt.Sprint(outQueue) + " messages queued")
	}
}

// dropSlow closes the connection of a client that does not keep up.
func (c *conn) dropSlow(reason string) {
	if c.dropping.CompareAndSwap(false, true) { // once, however many frames still come
		c.r.log.Info("dropping slow client", "ip", c.ip, "reason", reason)
		go c.close(websocket.ClosePolicyViolation, reason)
	}
}

func (c *conn) ok(id string, accepted bool, msg string, async bool) {
	f := okFrame(id, accepted, msg)
	if async {
		c.trySend(f)
	} else {
		c.send(f)
	}
}

func (c *conn) reject(id, msg string) {
	c.r.m.Rejected.WithLabelValues(reasonPrefix(msg)).Inc()
	c.ok(id, false, msg, false)
}

func (c *conn) isAuthed(pubkey string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Contains(c.authed, pubkey)
}

func (c *conn) readers() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Clone(c.authed)
}

// mayRead tells whether this connection may see a private event: only when
// authenticated as a pubkey the event is p-tagged to.
func (c *conn) mayRead(evt *nostr.Event) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, t := range evt.Tags {
		if len(t) >= 2 && t[0] == "p" && slices.Contains(c.authed, t[1]) {
			return true
		}
	}
	return false
}

func (c *conn) subCount() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.subs)
}

// subscription is an open REQ: its filters, and how many broadcasts had been
// published when it was registered. A broadcast with a sequence number at or
// below since is not delivered to it: the relay publishes an event before
// sending its OK, so a client that saw the OK and then sent this REQ gets the
// event from the query, not a second time as a live event.
type subscription struct {
	filters []nostr.Filter // normalized (normalizeFilter)
	values  int            // how many values they list
	since   uint64
}

// deliver sends d's event to each of this connection's subscriptions it
// matches. d builds each frame once per subscription id, for all connections:
// many clients use the same ids, and the frames are immutable once built.
func (c *conn) deliver(d *delivery) {
	evt := d.evt
	c.mu.RLock()
	var hits []string
	for id, sub := range c.subs {
		if d.seq <= sub.since {
			continue // published before this REQ was registered: its query has it
		}
		for i := range sub.filters {
			if matchFilter(&sub.filters[i], evt) {
				hits = append(hits, id)
				break
			}
		}
	}
	c.mu.RUnlock()
	for _, id := range hits {
		c.trySend(d.frame(id))
		c.r.m.Delivered.Inc()
	}
}

// handleEvents handles a run of EVENTs from this connection, answering each
// in turn: every check but the signature's runs event by event, and the
// signatures of the events that passed them are verified in one call.
func (c *conn) handleEvents(evts []*nostr.Event) {
	now := c.r.Now()
	refused := make([]string, len(evts))
	checked := make([]*nostr.Event, 0, len(evts))
	hashes := make([][32]byte, 0, len(evts))
	for i, evt := range evts {
		hash, msg := c.precheck(evt, now)
		if msg != "" {
			refused[i] = msg
			continue
		}
		checked = append(checked, evt)
		hashes = append(hashes, hash)
	}
	errs := make([]error, len(checked))
	c.r.verify.CheckSigs(checked, hashes, errs)
	j := 0
	for i, evt := range evts {
		switch {
		case refused[i] != "":
			c.reject(evt.ID, refused[i])
		case errs[j] != nil:
			j++
			c.reject(evt.ID, "invalid: bad signature")
		default:
			j++
			if !c.accept(evt) {
				return // the connection is closing
			}
		}
	}
}

// precheck runs every check on evt but its signature's. It returns the hash
// of evt's serialization (its true id) and, if a check failed, the refusal.
func (c *conn) precheck(evt *nostr.Event, now time.Time) ([32]byte, string) {
	r := c.r
	if !c.exempt && !r.ipEvents.allow(c.ip, now) {
		return [32]byte{}, "rate-limited: too many events from your address; slow down"
	}
	if evt.Kind == nostr.KindClientAuthentication {
		return [32]byte{}, "invalid: AUTH events are sent with the AUTH verb, not EVENT"
	}
	hash, msg := r.check(evt, now)
	if msg != "" {
		return hash, msg
	}
	if msg := r.policy(evt); msg != "" {
		return hash, msg
	}
	if !r.writers[evt.PubKey] && !r.pkEvents.allow(evt.PubKey, now) {
		return hash, "rate-limited: too many events from this author; slow down"
	}
	return hash, ""
}

// accept takes an event whose signature verified: it refuses a protected
// event from anyone but its authenticated author, broadcasts an ephemeral
// one, and queues any other for saving, answering OK once it is committed.
// It returns false if the connection closed while waiting to queue.
func (c *conn) accept(evt *nostr.Event) bool {
	r := c.r
	if isProtected(evt) && !c.isAuthed(evt.PubKey) {
		c.send(frame("AUTH", c.challenge))
		c.reject(evt.ID, "auth-required: this event is protected (NIP-70); authenticate as its author to publish it")
		return true
	}
	if isEphemeral(evt.Kind) {
		r.m.Accepted.WithLabelValues(kindClass(evt.Kind)).Inc()
		r.publish(evt) // before the OK: see subscription.since
		c.ok(evt.ID, true, "", false)
		return true
	}
	select {
	case c.saves <- struct{}{}:
	case <-c.ctx.Done():
		return false
	}
	r.store.SaveAsync(evt, func(err error) {
		<-c.saves
		switch {
		case err == nil:
			r.m.Accepted.WithLabelValues(kindClass(evt.Kind)).Inc()
			r.publish(evt) // before the OK: see subscription.since
			c.ok(evt.ID, true, "", true)
		case errors.Is(err, storage.ErrDuplicate), errors.Is(err, storage.ErrReplaced):
			r.m.Accepted.WithLabelValues("duplicate").Inc()
			c.ok(evt.ID, true, err.Error(), true)
		case errors.Is(err, storage.ErrDeleted), errors.Is(err, storage.ErrExpired), errors.Is(err, storage.ErrInvalid):
			// These errors' texts carry their NIP-01 prefix.
			r.m.Rejected.WithLabelValues(reasonPrefix(err.Error())).Inc()
			c.ok(evt.ID, false, err.Error(), true)
		default:
			r.log.Error("saving event failed", "id", evt.ID, "err", err)
			r.m.Rejected.WithLabelValues("error").Inc()
			c.ok(evt.ID, false, "error: could not save the event", true)
		}
	})
	return true
}

// prepareFilters enforces the REQ/COUNT limits and the privacy rule for
// explicitly requested private kinds, and normalizes the filters
// (normalizeFilter). It returns how many values they list, and a CLOSED
// message or "".
func (c *conn) prepareFilters(filters []nostr.Filter) (int, string) {
	l := c.r.cfg.Limits
	if l.MaxFilters > 0 && len(filters) > l.MaxFilters {
		return 0, fmt.Sprintf("invalid: too many filters (max %d)", l.MaxFilters)
	}
	values := 0
	for i := range filters {
		values += normalizeFilter(&filters[i])
	}
	if l.MaxFilterValues > 0 && values > l.MaxFilterValues {
		return values, fmt.Sprintf("invalid: the filters list %d values (ids, authors, kinds, tag values); the most is %d", values, l.MaxFilterValues)
	}
	readers := c.readers()
	for i := range filters {
		f := &filters[i]
		if l.MaxLimit > 0 && f.Limit > l.MaxLimit {
			f.Limit = l.MaxLimit
		}
		if f.Limit == 0 && !f.LimitZero {
			f.Limit = l.DefaultLimit
		}
		wantsPrivate, onlyPrivate := false, len(f.Kinds) > 0
		for _, k := range f.Kinds {
			if isPrivateKind(k) {
				wantsPrivate = true
			} else {
				onlyPrivate = false
			}
		}
		if !wantsPrivate {
			continue
		}
		if len(readers) == 0 {
			c.send(frame("AUTH", c.challenge))
			return values, "auth-required: private messages are served only to their authenticated recipient"
		}
		if ps := f.Tags["p"]; onlyPrivate && len(ps) > 0 && !slices.ContainsFunc(ps, func(p string) bool { return slices.Contains(readers, p) }) {
			return values, "restricted: you may only read private messages addressed to you"
		}
	}
	return values, ""
}

// checkSubID refuses a REQ's or COUNT's id longer than max_subid_length;
// NIP-01 counts its length in characters.
func (r *Relay) checkSubID(subID string) string {
	if l := r.cfg.Limits.MaxSubIDLength; l > 0 && utf8.RuneCountInString(subID) > l {
		return fmt.Sprintf("invalid: subscription id longer than %d characters", l)
	}
	return ""
}

func (c *conn) handleReq(subID string, filters []nostr.Filter) {
	r := c.r
	if !c.exempt && !r.ipReqs.allow(c.ip, r.Now()) {
		c.refuseReq(subID, "rate-limited: too many requests; slow down")
		return
	}
	if msg := r.checkSubID(subID); msg != "" {
		c.send(frame("CLOSED", subID, msg))
		return
	}
	values, msg := c.prepareFilters(filters)
	if msg != "" {
		c.refuseReq(subID, msg)
		return
	}
	c.mu.Lock()
	old, replacing := c.subs[subID]
	if max := r.cfg.Limits.MaxSubscriptions; !replacing && max > 0 && len(c.subs) >= max {
		c.mu.Unlock()
		c.send(frame("CLOSED", subID, fmt.Sprintf("blocked: too many open subscriptions (max %d); CLOSE one first", max)))
		return
	}
	if most := r.cfg.Limits.MaxFilterValues; most > 0 {
		open := values - old.values // old is the zero value unless replacing
		for _, sub := range c.subs {
			open += sub.values
		}
		if open > most {
			c.mu.Unlock()
			c.refuseReq(subID, fmt.Sprintf("blocked: the open subscriptions would list %d values (ids, authors, kinds, tag values); the most is %d in all; CLOSE one first", open, most))
			return
		}
	}
	// Register before querying, so nothing stored in between is missed, and
	// note the broadcasts already published: their events were stored (and
	// acknowledged) before this REQ, so the query returns them.
	c.subs[subID] = subscription{filters: filters, values: values, since: r.published.Load()}
	c.mu.Unlock()
	if !replacing {
		r.m.Subscriptions.Inc()
	}

	start := time.Now()
	vis := storage.Visibility{PrivateKinds: PrivateKinds, Readers: c.readers()}
	var seen map[string]struct{}
	if len(filters) > 1 {
		seen = make(map[string]struct{})
	}
	for _, f := range filters {
		if f.LimitZero {
			continue
		}
		err := r.store.QueryRaw(c.ctx, f, vis, func(raw []byte) error {
			if seen != nil {
				id := gjson.GetBytes(raw, "id").Str
				if _, dup := seen[id]; dup {
					return nil
				}
				seen[id] = struct{}{}
			}
			c.send(eventFrame(subID, raw))
			return c.ctx.Err()
		})
		if err != nil {
			if c.ctx.Err() == nil {
				r.log.Error("query failed", "filter", f.String(), "err", err)
				c.refuseReq(subID, "error: query failed")
			}
			return
		}
	}
	c.send(frame("EOSE", subID))
	r.m.QuerySeconds.WithLabelValues("req").Observe(time.Since(start).Seconds())
}

func (c *conn) handleCount(subID string, filters []nostr.Filter) {
	r := c.r
	if !c.exempt && !r.ipReqs.allow(c.ip, r.Now()) {
		c.send(frame("CLOSED", subID, "rate-limited: too many requests; slow down"))
		return
	}
	if msg := r.checkSubID(subID); msg != "" {
		c.send(frame("CLOSED", subID, msg))
		return
	}
	if _, msg := c.prepareFilters(filters); msg != "" {
		c.send(frame("CLOSED", subID, msg))
		return
	}
	start := time.Now()
	vis := storage.Visibility{PrivateKinds: PrivateKinds, Readers: c.readers()}
	total, err := r.store.CountAny(c.ctx, filters, vis)
	if err != nil {
		if c.ctx.Err() == nil {
			r.log.Error("count failed", "filters", len(filters), "err", err)
			c.send(frame("CLOSED", subID, "error: count failed"))
		}
		return
	}
	c.send(frame("COUNT", subID, map[string]any{"count": total}))
	r.m.QuerySeconds.WithLabelValues("count").Observe(time.Since(start).Seconds())
}

// MaxAuthKeys is how many keys one connection may authenticate as (NIP-42
// allows several). Every private event is checked against each of them,
// for every connection, on the one dispatcher goroutine.
const MaxAuthKeys = 16

func (c *conn) handleAuth(evt *nostr.Event) {
	now := c.r.Now()
	reject := func(msg string) {
		c.ok(evt.ID, false, msg, false)
	}
	c.mu.RLock()
	already, full := slices.Contains(c.authed, evt.PubKey), len(c.authed) >= MaxAuthKeys
	c.mu.RUnlock()
	switch {
	case full && !already:
		reject(fmt.Sprintf("restricted: a connection may authenticate as at most %d keys", MaxAuthKeys))
	case evt.Kind != nostr.KindClientAuthentication:
		reject("invalid: AUTH takes a kind 22242 event")
	case !evt.CheckID():
		reject("invalid: event id does not match its content")
	case evt.Tags.FindWithValue("challenge", c.challenge) == nil:
		reject("invalid: the challenge does not match")
	case !c.exempt && !c.r.ipEvents.allow(c.ip, now):
		// A signature check (here, or for the warning below) costs what an
		// EVENT's does: the same bucket.
		reject("rate-limited: too many events from your address; slow down")
	case !slices.ContainsFunc(c.urls, func(u string) bool { return sameRelay(evt.Tags.Find("relay"), u) }):
		reject("invalid: the relay tag does not name this relay")
		if c.r.writers[evt.PubKey] && c.r.verify.Check(evt) == nil {
			c.r.warnForeignAuth(evt.Tags.Find("relay"))
		}
	case evt.CreatedAt.Time().Before(now.Add(-10*time.Minute)) || evt.CreatedAt.Time().After(now.Add(10*time.Minute)):
		reject("invalid: created_at is more than 10 minutes off")
	default:
		if c.r.verify.Check(evt) != nil {
			reject("invalid: bad signature")
			return
		}
		c.mu.Lock()
		if !slices.Contains(c.authed, evt.PubKey) && len(c.authed) < MaxAuthKeys {
			c.authed = append(c.authed, evt.PubKey)
		}
		c.mu.Unlock()
		c.ok(evt.ID, true, "", false)
	}
}

// sameRelay compares an AUTH event's relay tag with this relay's URL: same
// host and path; ws and wss are treated alike (a TLS proxy may sit in
// front), and so are an explicit default port (80, 443) and none, as
// clients normalise URLs differently.
func sameRelay(tag nostr.Tag, want string) bool {
	if len(tag) < 2 {
		return false
	}
	a, err1 := url.Parse(strings.ToLower(strings.TrimSuffix(tag[1], "/")))
	b, err2 := url.Parse(strings.ToLower(strings.TrimSuffix(want, "/")))
	if err1 != nil || err2 != nil {
		return false
	}
	return hostNoDefaultPort(a) == hostNoDefaultPort(b) && a.Path == b.Path && (a.Scheme == "ws" || a.Scheme == "wss")
}

func hostNoDefaultPort(u *url.URL) string {
	if p := u.Port(); p == "80" || p == "443" {
		return strings.TrimSuffix(u.Host, ":"+p)
	}
	return u.Host
}

// frame encodes a relay-to-client message.
func frame(verb string, args ...any) []byte {
	b, _ := json.Marshal(append([]any{verb}, args...))
	return b
}

// eventFrame wraps an event's stored JSON without re-encoding it.
func eventFrame(subID string, raw []byte) []byte {
	b := make([]byte, 0, len(raw)+len(subID)+16)
	b = append(b, `["EVENT",`...)
	b = appendJSONString(b, subID)
	b = append(b, ',')
	b = append(b, raw...)
	return append(b, ']')
}

// okFrame is the hot path's ["OK", id, accepted, msg], built without reflection.
func okFrame(id string, accepted bool, msg string) []byte {
	b := make([]byte, 0, 80+len(msg))
	b = append(b, `["OK",`...)
	b = appendJSONString(b, id)
	if accepted {
		b = append(b, ",true,"...)
	} else {
		b = append(b, ",false,"...)
	}
	b = appendJSONString(b, msg)
	return append(b, ']')
}

// appendJSONString appends s as a JSON string literal.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
