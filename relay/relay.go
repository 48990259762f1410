// Package relay is the node's personal Nostr relay: NIP-01 over websocket,
// with NIP-09, 11, 40, 42, 45, 59 and 70, on the SQLite store of package
// storage. Private mail (kinds 4, 13, 1059) is served only to the
// authenticated user it is addressed to; writes follow a personal-relay
// policy (the owner's outbox plus an inbox for gift wraps) unless opened up.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/internal/eventsig"
	"github.com/anchorchat/anchorchat/storage"
)

// Relay serves the Nostr protocol over websocket and the NIP-11 document over
// plain HTTP on the same URL. Create it with New, start its background work
// with Start, mount it as an http.Handler, and Close it before closing its store.
type Relay struct {
	cfg   Config
	store *storage.Store
	log   *slog.Logger
	m     *Metrics

	// OnSaved, when set, is called after an event has been durably stored
	// (or, for an ephemeral event, accepted). It runs on the relay's
	// dispatcher goroutine and must not block for long.
	OnSaved func(evt *nostr.Event)
	// Exempt, when set, picks the websocket requests that are not held to the
	// per-IP limits (connections, EVENT and REQ buckets): the node's own
	// messenger, which shares 127.0.0.1 with whatever else arrives over
	// loopback (an onion service, a local proxy). Set it before serving.
	Exempt func(*http.Request) bool
	// Now is the relay's clock (tests may replace it before Start).
	Now func() time.Time
	// SweepInterval is how often expired events are purged (NIP-40).
	SweepInterval time.Duration

	writers map[string]bool // owner and allowlist
	verify  *eventsig.Verifier

	ipEvents, pkEvents, ipReqs *keyedLimiter

	mu    sync.Mutex
	conns map[*conn]struct{}
	perIP map[string]int

	broadcast chan published
	published atomic.Uint64 // broadcasts published so far; the last one's seq
	pubMu     sync.Mutex

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	lastForeignAuth atomic.Int64 // unix seconds of the last warnForeignAuth log
}

// New creates a relay on store. metrics may be nil.
func New(cfg Config, store *storage.Store, log *slog.Logger, metrics *Metrics) *Relay {
	if log == nil {
		log = slog.Default()
	}
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Relay{
		cfg:           cfg,
		store:         store,
		log:           log,
		m:             metrics,
		Now:           time.Now,
		SweepInterval: time.Minute,
		writers:       make(map[string]bool),
		verify:        eventsig.New(0),
		ipEvents:      newKeyedLimiter(cfg.Limits.EventsPerSecondPerIP, cfg.Limits.EventBurstPerIP),
		pkEvents:      newKeyedLimiter(cfg.Limits.EventsPerSecondPerPubkey, cfg.Limits.EventBurstPerPubkey),
		ipReqs:        newKeyedLimiter(cfg.Limits.ReqsPerSecondPerIP, cfg.Limits.ReqBurstPerIP),
		conns:         make(map[*conn]struct{}),
		perIP:         make(map[string]int),
		broadcast:     make(chan published, 4096),
		ctx:           ctx,
		cancel:        cancel,
	}
	if cfg.Owner != "" {
		r.writers[cfg.Owner] = true
	}
	for _, pk := range cfg.Allow {
		r.writers[pk] = true
	}
	return r
}

// Start runs the live-event dispatcher and the expiry sweeper until Close.
func (r *Relay) Start() {
	if r.cfg.Owner == "" && !r.cfg.Open {
		r.log.Warn("relay has no owner and is not open: it will refuse every event")
	}
	r.wg.Add(2)
	go r.dispatch()
	go r.sweep()
}

// Close drops every connection, waits for their handlers and stops the
// background work. Saves already handed to the store still complete: close
// the store afterwards to flush them.
func (r *Relay) Close() {
	r.cancel()
	r.mu.Lock()
	for c := range r.conns {
		go c.shutdown()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// ServeHTTP answers NIP-11 requests, upgrades websocket requests, and says
// what this is to anything else.
func (r *Relay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
		r.serveWebsocket(w, req)
		return
	}
	if strings.Contains(req.Header.Get("Accept"), "application/nostr+json") {
		r.serveInfo(w, req)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "%s: a Nostr relay. Connect with a websocket client; NIP-11 document with Accept: application/nostr+json.\n", r.cfg.Name)
}

// clientIP is the address a connection's per-IP limits apply to: its TCP
// peer, or, when the peer is a trusted proxy (Config.TrustedProxies), the
// rightmost address in X-Forwarded-For that is not a trusted proxy. Each
// proxy appends the address it was connected from, so the addresses left of
// that one are the client's own say and are not believed. An entry that is
// not an address ends the walk at the last trusted hop.
func (r *Relay) clientIP(req *http.Request) string {
	ap, err := netip.ParseAddrPort(req.RemoteAddr)
	if err != nil {
		host, _, err := net.SplitHostPort(req.RemoteAddr)
		if err != nil {
			return req.RemoteAddr
		}
		return host
	}
	ip := ap.Addr().Unmap()
	if !r.trustedProxy(ip) {
		return ip.String()
	}
	var hops []string
	for _, v := range req.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		ip = hop.Unmap()
		if !r.trustedProxy(ip) {
			break
		}
	}
	return ip.String()
}

func (r *Relay) trustedProxy(ip netip.Addr) bool {
	for _, p := range r.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// limitKey is what the per-IP limits count a client address as: an IPv4
// address itself, an IPv6 address by its /64, the block one subscriber
// or host is given (one client could otherwise take a fresh address for
// every connection).
func limitKey(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil || !ip.Is6() {
		return addr
	}
	p, _ := ip.WithZone("").Prefix(64)
	return p.String()
}

func (r *Relay) serveWebsocket(w http.ResponseWriter, req *http.Request) {
	ip := limitKey(r.clientIP(req))
	exempt := r.Exempt != nil && r.Exempt(req)
	r.mu.Lock()
	if r.ctx.Err() != nil {
		r.mu.Unlock()
		http.Error(w, "relay shutting down", http.StatusServiceUnavailable)
		return
	}
	if max := r.cfg.Limits.MaxConnectionsPerIP; !exempt && max > 0 && r.perIP[ip] >= max {
		r.mu.Unlock()
		http.Error(w, "rate-limited: too many connections from your address", http.StatusTooManyRequests)
		return
	}
	if !exempt {
		r.perIP[ip]++
	}
	r.mu.Unlock()
	release := func() {
		if !exempt {
			r.releaseIP(ip)
		}
	}

	co := &coalescer{}
	ws, err := upgrader.Upgrade(&coalescingWriter{ResponseWriter: w, c: co}, req, nil)
	if err != nil {
		release()
		r.log.Debug("websocket accept failed", "ip", ip, "err", err)
		return
	}
	c := newConn(r, ws, co, ip, r.relayURLs(req))
	c.exempt = exempt
	// Close may have run during the upgrade, after the check above: it
	// cancels r.ctx before it takes r.mu to drop the registered
	// connections, so checking again under r.mu leaves no gap.
	r.mu.Lock()
	if r.ctx.Err() != nil {
		r.mu.Unlock()
		release()
		c.close(websocket.CloseGoingAway, "relay shutting down")
		return
	}
	r.conns[c] = struct{}{}
	r.wg.Add(1) // Close waits for this handler
	r.mu.Unlock()
	r.m.Connections.Inc()
	defer func() {
		r.mu.Lock()
		delete(r.conns, c)
		r.mu.Unlock()
		release()
		r.m.Connections.Dec()
		r.m.Subscriptions.Sub(float64(c.subCount()))
		r.wg.Done()
	}()
	c.serve()
}

func (r *Relay) releaseIP(ip string) {
	r.mu.Lock()
	if r.perIP[ip]--; r.perIP[ip] <= 0 {
		delete(r.perIP, ip)
	}
	r.mu.Unlock()
}

// relayURLs are the URLs a client may name in the "relay" tag of an AUTH
// event on this connection: the configured public URL and aliases, and the address the
// connection arrived on (with "localhost" for a loopback address), both
// with the request's path. The Host header is not trusted: a relay the user
// authenticates to could otherwise pass our challenge on, get it signed for
// its own URL, and replay the AUTH here with its own name as Host.
func (r *Relay) relayURLs(req *http.Request) []string {
	var urls []string
	if r.cfg.URL != "" {
		urls = append(urls, r.cfg.URL)
	}
	urls = append(urls, r.cfg.Aliases...)
	if la, ok := req.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(la.String()); err == nil {
			scheme := "ws"
			if req.TLS != nil {
				scheme = "wss"
			}
			urls = append(urls, scheme+"://"+ap.String()+req.URL.Path)
			if ap.Addr().Unmap().IsLoopback() {
				urls = append(urls, scheme+"://localhost:"+strconv.Itoa(int(ap.Port()))+req.URL.Path)
			}
		}
	}
	return urls
}

// warnForeignAuth tells the operator, at most once a minute, that a valid
// AUTH by the owner or an allowlisted key named a relay URL this relay does
// not answer to: behind a proxy, relay.url must be set for clients to
// authenticate at all. (Anyone else's AUTH could name any URL to plant it
// in this advice.)
func (r *Relay) warnForeignAuth(tag nostr.Tag) {
	now := time.Now().Unix()
	last := r.lastForeignAuth.Load()
	if now-last < 60 || !r.lastForeignAuth.CompareAndSwap(last, now) {
		return
	}
	named := ""
	if len(tag) > 1 && len(tag[1]) <= 200 {
		named = tag[1]
	}
	r.log.Warn("refused a writer's AUTH naming another relay URL: if clients reach this relay at that URL (a proxy, another name), set relay.url or relay.alias to it; if not, another relay may have passed on this relay's challenge",
		"named", named, "relay_url", r.cfg.URL)
}

var upgrader = websocket.Upgrader{
	ReadBufferSize:  4096,
	WriteBufferSize: 8192,
	CheckOrigin:     func(*http.Request) bool { return true }, // Nostr clients connect from any origin
}

// delivery is one event on its way to the live subscriptions. The event is
// encoded, and each subscription's frame built, only when a subscription
// matches it: most events published to a personal relay match none.
type delivery struct {
	published
	raw    []byte
	frames map[string][]byte // by subscription id
}

// frame is the EVENT frame for subscription id, in the store's encoding, byte
// for byte what a REQ would return.
func (d *delivery) frame(id string) []byte {
	if f, ok := d.frames[id]; ok {
		return f
	}
	if d.raw == nil {
		d.raw = storage.EncodeEvent(d.evt)
		d.frames = make(map[string][]byte)
	}
	f := eventFrame(id, d.raw)
	d.frames[id] = f
	return f
}

// dispatch delivers stored and ephemeral events to matching live subscriptions.
func (r *Relay) dispatch() {
	defer r.wg.Done()
	var conns []*conn
	for {
		var pub published
		select {
		case <-r.ctx.Done():
			return
		case pub = <-r.broadcast:
		}
		evt := pub.evt
		conns = conns[:0]
		r.mu.Lock()
		for c := range r.conns {
			conns = append(conns, c)
		}
		r.mu.Unlock()
		private := isPrivateKind(evt.Kind)
		d := delivery{published: pub}
		for _, c := range conns {
			if private && !c.mayRead(evt) {
				continue
			}
			c.deliver(&d)
		}
		if r.OnSaved != nil {
			r.OnSaved(evt)
		}
	}
}

func (r *Relay) sweep() {
	defer r.wg.Done()
	if r.SweepInterval <= 0 {
		return
	}
	t := time.NewTicker(r.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
			n, err := r.store.SweepExpired(r.ctx)
			switch {
			case err != nil && !errors.Is(err, context.Canceled):
				r.log.Warn("sweeping expired events failed", "err", err)
			case n > 0:
				r.log.Info("swept expired events", "count", n)
			}
		}
	}
}

// Publish stores an event the node itself made (already signed) and
// delivers it to live subscriptions, as if a client had published it. It
// returns once the event is durably stored; a duplicate is not an error.
func (r *Relay) Publish(ctx context.Context, evt *nostr.Event) error {
	if err := r.verify.Check(evt); err != nil {
		return fmt.Errorf("relay: refusing to publish a badly signed event: %w", err)
	}
	if !isEphemeral(evt.Kind) {
		err := r.store.Save(ctx, evt)
		if errors.Is(err, storage.ErrDuplicate) || errors.Is(err, storage.ErrReplaced) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("relay: storing event: %w", err)
		}
	}
	r.m.Accepted.WithLabelValues(kindClass(evt.Kind)).Inc()
	r.publish(evt)
	return nil
}

// publish hands an accepted event to the dispatcher. It never blocks the
// store's writer for long: if the dispatcher is far behind, it waits for room
// only as long as the relay runs.
// published is a stored (or ephemeral) event on its way to the dispatcher,
// numbered in publish order.
type published struct {
	evt *nostr.Event
	seq uint64
}

// publish hands evt to the dispatcher. Numbering and sending happen under one
// lock, so broadcasts reach the dispatcher in seq order.
func (r *Relay) publish(evt *nostr.Event) {
	r.pubMu.Lock()
	defer r.pubMu.Unlock()
	select {
	case r.broadcast <- published{evt, r.published.Load() + 1}:
		r.published.Add(1)
	case <-r.ctx.Done():
	}
}

func isPrivateKind(kind int) bool { return slices.Contains(PrivateKinds, kind) }

func isEphemeral(kind int) bool { return kind >= 20000 && kind < 30000 }

// check applies the stateless validity rules to an event whose JSON shape has
// already been parsed. It returns a NIP-01 rejection message, or "" and the
// event's hash (its verified id), over which the signature is then checked.
func (r *Relay) check(evt *nostr.Event, now time.Time) (hash [32]byte, msg string) {
	l := r.cfg.Limits
	if l.MaxEventTags > 0 && len(evt.Tags) > l.MaxEventTags {
		return hash, fmt.Sprintf("invalid: too many tags (max %d)", l.MaxEventTags)
	}
	// NIP-11 counts characters; a content within the limit in bytes is
	// within it in characters too, so only a long one is counted.
	if l.MaxContentLength > 0 && len(evt.Content) > l.MaxContentLength && utf8.RuneCountInString(evt.Content) > l.MaxContentLength {
		return hash, fmt.Sprintf("invalid: content too long (max %d characters)", l.MaxContentLength)
	}
	if !storage.ValidUTF8(evt) {
		return hash, "invalid: content and tags must be valid UTF-8"
	}
	created := evt.CreatedAt.Time()
	if l.MaxFutureSkew > 0 && created.After(now.Add(l.MaxFutureSkew)) {
		return hash, fmt.Sprintf("invalid: created_at is more than %s in the future", l.MaxFutureSkew)
	}
	if l.MaxPastAge > 0 {
		oldest := now.Add(-l.MaxPastAge)
		if evt.Kind == nostr.KindGiftWrap {
			oldest = oldest.Add(-GiftWrapBackdate)
		}
		if created.Before(oldest) {
			return hash, fmt.Sprintf("invalid: created_at is more than %s in the past", now.Sub(oldest).Round(time.Second))
		}
	}
	if exp, ok := expiration(evt); ok && exp <= now.Unix() {
		return hash, "invalid: event has expired"
	}
	hash, ok := eventsig.CheckID(evt)
	if !ok {
		return hash, "invalid: event id does not match its content"
	}
	return hash, ""
}

// policy decides who may write what. It returns a rejection message, or "".
func (r *Relay) policy(evt *nostr.Event) string {
	if r.cfg.Open || r.writers[evt.PubKey] {
		return ""
	}
	if evt.Kind == nostr.KindGiftWrap {
		for _, t := range evt.Tags {
			if len(t) >= 2 && t[0] == "p" && r.writers[t[1]] {
				return ""
			}
		}
		return "restricted: this relay only accepts gift wraps addressed to its owner"
	}
	return "restricted: this is a personal relay; only its owner may publish here (gift-wrapped mail for the owner is welcome)"
}

func expiration(evt *nostr.Event) (int64, bool) {
	for _, t := range evt.Tags {
		if len(t) >= 2 && t[0] == "expiration" {
			v, err := strconv.ParseInt(t[1], 10, 64)
			if err != nil {
				return 0, false
			}
			return v, true
		}
	}
	return 0, false
}

func isProtected(evt *nostr.Event) bool {
	for _, t := range evt.Tags {
		if len(t) == 1 && t[0] == "-" {
			return true
		}
	}
	return false
}
