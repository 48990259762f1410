package chat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/internal/hub"
	"github.com/anchorchat/anchorchat/internal/nostrclient"
)

// Config configures a Service.
type Config struct {
	// Key is the user's identity (required). Its secret is used for
	// NIP-44, seals and NIP-42 AUTH and is never logged.
	Key *identity.Key
	// RelayURL is the user's own relay (ws:// or wss://, required): inbox,
	// the sender's copies, and the first place to look things up.
	RelayURL string
	// DBPath is the SQLite message store (created 0600, WAL).
	DBPath string
	// Logger defaults to slog.Default(). Message contents are never logged
	// above debug level, and even there only ids and kinds.
	Logger *slog.Logger
	// Dial opens relay websockets (default websocket.Dial); a hook for tests.
	// Unless AllowPrivateRelays, relays other people name are dialled by
	// the service's own guarded dialer instead (see AllowPrivateRelays).
	Dial nostrclient.Dialer
	// Now is the clock (default time.Now); tests inject one.
	Now func() time.Time

	// InboxRelays, when set, replaces the default inbox: the own relay plus
	// the relays of our own kind 10050 list found there.
	InboxRelays []string
	// DiscoveryRelays are asked for other people's kind 10050 lists and
	// handle claims, besides the own relay and the hints known for them.
	DiscoveryRelays []string
	// FallbackRelays receive messages for a recipient who has no kind 10050
	// list and no known relays.
	FallbackRelays []string

	// BlobURL is the base URL of the blob store files are uploaded to (the
	// node mounts BlobStore there), e.g. "http://127.0.0.1:4848/blobs".
	BlobURL string
	// BlobPublicURL is the base URL the blob store names its blobs by in
	// file messages (BlobStore's PublicURL), when it differs from BlobURL.
	// FetchFile reads URLs under BlobURL or BlobPublicURL from BlobURL.
	BlobPublicURL string
	// DeleteBlob removes a blob from the node's own blob store (the node
	// passes BlobStore.Delete). When a file message we sent is removed
	// (expired or deleted), its blob under BlobURL or BlobPublicURL goes
	// too; a failure is retried with each purge. Nil: blobs are left.
	DeleteBlob func(sha string) error
	// AllowPrivateFileHosts lets FetchFile download from any address. By
	// default a file message's URL must resolve to a public address (not
	// loopback, private, link-local, ...), except the node's own blob
	// store: a sender must not make the recipient's node send requests into
	// the recipient's machine or network. Set it for LAN and loopback setups.
	AllowPrivateFileHosts bool
	// AllowPrivateRelays lets the service dial relays other people name
	// (a contact's kind 10050 list, the relays of an nprofile, a NIP-05
	// document or a handle claim) at any address. By default such a relay
	// must resolve to a public address, checked on the address dialled: a
	// contact must not make our node open connections into our machine or
	// network. A refused relay fails its deliveries at once (the error
	// wraps ErrPrivateAddress). The relays we chose (RelayURL, InboxRelays
	// and our own kind 10050 list, DiscoveryRelays, FallbackRelays) are
	// dialled as they are. Set it for LAN and loopback setups.
	AllowPrivateRelays bool
	// HTTPClient, when set, is used for blob uploads and downloads as it is
	// (AllowPrivateFileHosts is then the client's business). Default: a
	// 60 s timeout, and for downloads the public-address check above.
	HTTPClient *http.Client
	// MaxFileSize bounds files sent and downloaded (default 32 MiB).
	MaxFileSize int64

	// Resolver resolves name@domain (NIP-05); nil means the zero Resolver.
	Resolver *identity.Resolver
	// Verdict, when set, is asked for the anchoring verdict of a contact's
	// handle claim (the anchoring layer provides it). It must not block long.
	Verdict func(ctx context.Context, pubkey, handle string) string

	// Outbox retry: the first retry after RetryBase (default 2 s), doubling
	// up to RetryMax (default 10 min); a delivery still failing after
	// GiveUpAfter (default 72 h) is marked failed.
	RetryBase, RetryMax, GiveUpAfter time.Duration
	// PublishTimeout bounds waiting for one relay's OK (default 10 s).
	PublishTimeout time.Duration
	// RelayTimeout bounds the outbox's attempt at one relay: the dial and
	// every publish of that pass (default 1 min). The outbox serves up to
	// 16 relays at once, each on its own, so a relay that stalls delays only
	// its own deliveries; what it has not acknowledged in time is retried.
	RelayTimeout time.Duration
	// PurgeInterval is how often expired messages are purged (default 30 s).
	PurgeInterval time.Duration
	// RelayIdleTimeout closes a pooled connection to a relay (deliveries,
	// lookups) that nothing has used for this long (default 2 min); one the
	// relay drops is forgotten at once, and one on which a publish got no
	// OK within PublishTimeout is not used again. The inbox's connections
	// stay open.
	RelayIdleTimeout time.Duration
	// ReconnectDelay is the first wait before re-subscribing to an inbox
	// relay that dropped (default 1 s, doubling up to 1 min).
	ReconnectDelay time.Duration
}

// Service is one user's messenger: the outbox, the inbox subscriptions and
// the message store. Create it with New, run it with Start, stop it with Close.
type Service struct {
	cfg   Config
	log   *slog.Logger
	w     *Wrapper
	pk    string
	st    *store
	now   func() time.Time
	httpc *http.Client // uploads, and downloads from the own blob store
	dl    *http.Client // downloads from other people's blob stores

	relayHTTP *http.Client // guardedDial's: relays other people name
	trustMu   sync.Mutex
	trusted   map[string]bool // relays the user chose (normalized URLs)

	sign func(*nostr.Event) error

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{}

	poolMu     sync.Mutex
	pool       map[string]*pooledConn
	poolClosed bool // set by Close: nothing joins the pool, and Start starts nothing, any more

	busyMu sync.Mutex
	busy   map[string]bool // relays an outbox worker is delivering to

	watch *hub.Hub[Event]

	learnMu sync.Mutex
	learnt  map[string]time.Time // when a sender's handle was last looked up

	handlersMu sync.RWMutex
	handlers   map[int]func(context.Context, *Message)

	startOnce sync.Once
	closeOnce sync.Once
}

// New opens the message store and prepares the service; nothing talks to
// the network until Start.
func New(cfg Config) (*Service, error) {
	if cfg.Key == nil {
		return nil, errors.New("chat: Config.Key is required")
	}
	if cfg.RelayURL == "" {
		return nil, errors.New("chat: Config.RelayURL is required")
	}
	if cfg.DBPath == "" {
		return nil, errors.New("chat: Config.DBPath is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = 2 * time.Second
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 10 * time.Minute
	}
	if cfg.GiveUpAfter <= 0 {
		cfg.GiveUpAfter = 72 * time.Hour
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 10 * time.Second
	}
	if cfg.RelayTimeout <= 0 {
		cfg.RelayTimeout = time.Minute
	}
	if cfg.PurgeInterval <= 0 {
		cfg.PurgeInterval = 30 * time.Second
	}
	if cfg.RelayIdleTimeout <= 0 {
		cfg.RelayIdleTimeout = 2 * time.Minute
	}
	if cfg.ReconnectDelay <= 0 {
		cfg.ReconnectDelay = time.Second
	}
	if cfg.MaxFileSize <= 0 {
		cfg.MaxFileSize = 32 << 20
	}
	if cfg.Resolver == nil {
		cfg.Resolver = &identity.Resolver{}
	}
	httpc, dl := cfg.HTTPClient, cfg.HTTPClient
	if httpc == nil {
		httpc = &http.Client{Timeout: 60 * time.Second}
		dl = httpc
		if !cfg.AllowPrivateFileHosts {
			dl = publicOnlyClient(60*time.Second, http.ProxyFromEnvironment)
		}
	}
	secret, err := cfg.Key.SecretHex()
	if err != nil {
		return nil, fmt.Errorf("chat: key: %w", err)
	}
	w, err := NewWrapper(secret)
	if err != nil {
		return nil, err
	}
	w.Now = cfg.Now
	st, err := openStore(context.Background(), cfg.DBPath)
	if err != nil {
		return nil, err
	}
	key := cfg.Key
	s := &Service{
		cfg: cfg, log: cfg.Logger.With("component", "chat"), w: w, pk: w.PublicKey(), st: st,
		now: cfg.Now, httpc: httpc, dl: dl,
		sign:      func(e *nostr.Event) error { return key.Sign(e) },
		wake:      make(chan struct{}, 1),
		pool:      make(map[string]*pooledConn),
		busy:      make(map[string]bool),
		watch:     hub.New[Event](256),
		relayHTTP: relayClient(), trusted: map[string]bool{},
	}
	s.trustRelays(slices.Concat([]string{cfg.RelayURL}, cfg.InboxRelays, cfg.DiscoveryRelays, cfg.FallbackRelays)...)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// PublicKey is the user's hex pubkey.
func (s *Service) PublicKey() string { return s.pk }

// Start runs the outbox worker, the inbox subscriptions and the expiry
// purger in the background until Close (or until ctx is cancelled). ctx also
// bounds the initial lookup of our own kind 10050 list.
func (s *Service) Start(ctx context.Context) error {
	started := false
	s.startOnce.Do(func() { started = true })
	if !started {
		return errors.New("chat: already started")
	}
	context.AfterFunc(ctx, s.cancel)
	inbox := s.inboxRelays(ctx)
	s.trustRelays(inbox...) // our own kind 10050 list
	// Close may have run during the lookup above: under poolMu, either it
	// has not (and its Wait comes after this Add) or nothing starts.
	s.poolMu.Lock()
	closed := s.poolClosed
	if !closed {
		s.wg.Add(2 + len(inbox))
	}
	s.poolMu.Unlock()
	if closed {
		return errors.New("chat: closed while starting")
	}
	s.log.Info("chat service starting", "pubkey", s.pk, "inbox_relays", inbox)
	go s.outboxLoop()
	go s.purgeLoop()
	for _, u := range inbox {
		go s.inboxLoop(u)
	}
	return nil
}

// Close stops the background work, closes relay connections and the store.
// Queued deliveries stay in the outbox for the next Start.
func (s *Service) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.cancel()
		// A dial pools its connection, and adds its watcher to wg, under
		// poolMu unless poolClosed: every such Add comes before the Wait.
		s.poolMu.Lock()
		s.poolClosed = true
		s.poolMu.Unlock()
		s.wg.Wait()
		s.closePool()
		s.watch.Close()
		err = s.st.close()
	})
	return err
}

func (s *Service) inboxRelays(ctx context.Context) []string {
	if len(s.cfg.InboxRelays) > 0 {
		return dedupRelays(s.cfg.InboxRelays)
	}
	out := []string{s.cfg.RelayURL}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if evt := s.newest(lctx, []string{s.cfg.RelayURL}, nostr.Filter{Kinds: []int{KindDMRelayList}, Authors: []string{s.pk}, Limit: 1}); evt != nil {
		out = append(out, relayTags(evt)...)
	}
	return dedupRelays(out)
}

func relayTags(evt *nostr.Event) []string {
	var out []string
	for t := range evt.Tags.FindAll("relay") {
		if nostr.IsValidRelayURL(t[1]) {
			out = append(out, t[1])
		}
	}
	return out
}

// NormalizeRelay is the one spelling of a relay URL the service keys relays
// by, and the URL it gives Config.Dial: go-nostr's NormalizeURL (host in
// lower case, no trailing slash), with the scheme in lower case too and a
// scheme's default port (wss 443, ws 80) dropped. A relay one list names
// "WSS://Relay.example:443/" and another "wss://relay.example" is one
// relay: dialled once, counted once among a recipient's relays, and trusted
// alike if the user chose it.
func NormalizeRelay(u string) string {
	u = strings.TrimSpace(u)
	if scheme, rest, ok := strings.Cut(u, "://"); ok {
		u = strings.ToLower(scheme) + "://" + rest
	}
	n := nostr.NormalizeURL(u)
	scheme, rest, ok := strings.Cut(n, "://")
	if !ok {
		return n
	}
	host, tail := rest, ""
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		host, tail = rest[:i], rest[i:]
	}
	switch {
	case scheme == "wss" && strings.HasSuffix(host, ":443"):
		host = strings.TrimSuffix(host, ":443")
	case scheme == "ws" && strings.HasSuffix(host, ":80"):
		host = strings.TrimSuffix(host, ":80")
	}
	return scheme + "://" + host + tail
}

func dedupRelays(urls []string) []string {
	out := make([]string, 0, len(urls))
	for _, u := range urls {
		n := NormalizeRelay(u)
		if n == "" {
			continue
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// Watch returns a channel of new messages, state changes, deletions and
// expiries, until ctx is done or the service closes. A watcher that does not
// keep up loses events (logged), never blocking the service.
func (s *Service) Watch(ctx context.Context) <-chan Event {
	return s.watch.Watch(ctx)
}

func (s *Service) notify(e Event) {
	if n := s.watch.Publish(e); n > 0 {
		s.log.Warn("chat watchers too slow, event dropped", "watchers", n, "type", e.Type, "message", e.MessageID)
	}
}

// SendOptions tune one message.
type SendOptions struct {
	// Subject sets the conversation title (NIP-17 "subject" tag).
	Subject string
	// ReplyTo is the rumor id this message answers ("e" tag).
	ReplyTo string
	// Expire overrides the conversation's disappearing timer for this
	// message (0: use the conversation's timer; negative: never expire).
	Expire time.Duration
	// Relays are extra relay hints for the recipients, used to find their
	// kind 10050 lists and as the fallback when they have none.
	Relays []string
}

// Send sends a text message (kind 14) to the recipients (each an @handle,
// npub, nprofile, hex pubkey or name@domain). The message is stored and
// queued at once; the outbox delivers it in the background. The returned
// message is in state queued; follow it with Watch, Message or WaitSent.
func (s *Service) Send(ctx context.Context, recipients []string, text string, opts SendOptions) (*Message, error) {
	if text == "" {
		return nil, errors.New("chat: empty message")
	}
	return s.send(ctx, recipients, KindChatMessage, text, nil, opts)
}

// SendRumor sends an application message of a kind the conversation
// carries besides text (today the tip kinds, KindTipRequest …
// KindTipStatus) with these extra tags ("p" tags are added). It is stored
// and delivered exactly like Send; the returned message's ID is the rumor
// id, i.e. SHA-256 of its NIP-01 serialization.
func (s *Service) SendRumor(ctx context.Context, recipients []string, kind int, content string, tags nostr.Tags, opts SendOptions) (*Message, error) {
	if !IsTipKind(kind) {
		return nil, fmt.Errorf("chat: SendRumor: kind %d is not an application kind", kind)
	}
	return s.send(ctx, recipients, kind, content, tags, opts)
}

// Handle registers fn for incoming messages of kind (one of the tip
// kinds): it is called once per new message, after the message is stored,
// on the inbox goroutine — fn must return quickly. A nil fn unregisters.
func (s *Service) Handle(kind int, fn func(ctx context.Context, m *Message)) {
	s.handlersMu.Lock()
	defer s.handlersMu.Unlock()
	if s.handlers == nil {
		s.handlers = map[int]func(context.Context, *Message){}
	}
	if fn == nil {
		delete(s.handlers, kind)
		return
	}
	s.handlers[kind] = fn
}

func (s *Service) handler(kind int) func(context.Context, *Message) {
	s.handlersMu.RLock()
	defer s.handlersMu.RUnlock()
	return s.handlers[kind]
}

// TipMessages returns the stored tip messages created at or after since,
// oldest first, in every conversation: the payments engine replays them at
// start-up so that a message stored just before a crash is not lost.
func (s *Service) TipMessages(ctx context.Context, since time.Time) ([]*Message, error) {
	ms, err := s.st.tipMessages(ctx, since.Unix())
	if err != nil {
		return nil, fmt.Errorf("chat: tip messages: %w", err)
	}
	return ms, nil
}

// ResolveAll resolves addresses to pubkeys (see Resolve).
func (s *Service) ResolveAll(ctx context.Context, addrs []string) ([]*Contact, error) {
	var out []*Contact
	for _, a := range addrs {
		c, err := s.Resolve(ctx, a)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func (s *Service) send(ctx context.Context, recipients []string, kind int, content string, extra nostr.Tags, opts SendOptions) (*Message, error) {
	contacts, err := s.ResolveAll(ctx, recipients)
	if err != nil {
		return nil, err
	}
	var peers []string
	for _, c := range contacts {
		if c.PubKey != s.pk && !slices.Contains(peers, c.PubKey) {
			peers = append(peers, c.PubKey)
		}
	}
	if len(peers) == 0 {
		return nil, errors.New("chat: no recipients other than ourselves")
	}
	if len(peers) > MaxParticipants-1 {
		return nil, fmt.Errorf("%w: %d recipients, at most %d", ErrTooManyParticipants, len(peers), MaxParticipants-1)
	}
	participants := normParticipants(append([]string{s.pk}, peers...))
	conv := ConversationID(participants)

	now := s.now()
	exp := int64(0)
	d := opts.Expire
	if d == 0 {
		if _, cd, err := s.st.conversation(ctx, conv); err == nil {
			d = cd
		}
	}
	if d > 0 {
		exp = now.Add(d).Unix()
	}

	tags := nostr.Tags{}
	for _, p := range peers {
		tags = append(tags, nostr.Tag{"p", p})
	}
	if opts.ReplyTo != "" {
		tags = append(tags, nostr.Tag{"e", opts.ReplyTo, "", "reply"})
	}
	if opts.Subject != "" {
		tags = append(tags, nostr.Tag{"subject", opts.Subject})
	}
	tags = append(tags, extra...)
	if exp > 0 {
		tags = append(tags, expirationTag(exp))
	}
	rumor := s.w.NewRumor(kind, content, tags, now)

	dels, err := s.wrapAll(ctx, &rumor, peers, exp, opts.Relays)
	if err != nil {
		return nil, err
	}
	m := &Message{
		ID: rumor.ID, Conversation: conv, Sender: s.pk, Kind: kind, Content: content, Tags: rumor.Tags,
		CreatedAt: now, Outgoing: true, Read: true,
	}
	if exp > 0 {
		m.ExpiresAt = time.Unix(exp, 0)
	}
	tx, err := s.st.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("chat: store message: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := upsertConversation(ctx, tx, conv, participants, opts.Subject, now.Unix()); err != nil {
		return nil, fmt.Errorf("chat: store conversation: %w", err)
	}
	if _, err := insertMessage(ctx, tx, m, now.Unix()); err != nil {
		return nil, fmt.Errorf("chat: store message: %w", err)
	}
	for _, d := range dels {
		if err := insertDelivery(ctx, tx, d, now.UnixMilli()); err != nil {
			return nil, fmt.Errorf("chat: queue delivery: %w", err)
		}
	}
	// Read back inside the transaction: once it commits, the outbox may
	// deliver at any moment, and Send returns the message as queued.
	stored, err := scanMessage(tx.StmtContext(ctx, s.st.msgStmt).QueryRowContext(ctx, rumor.ID))
	if err != nil {
		return nil, fmt.Errorf("chat: store message: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("chat: store message: %w", err)
	}
	s.log.Info("message queued", "id", rumor.ID, "kind", kind, "conversation", conv, "recipients", len(peers), "deliveries", len(dels))
	s.kick()
	s.notify(Event{Type: EventMessage, Conversation: conv, MessageID: stored.ID, Message: stored})
	return stored, nil
}

// wrapAll makes one gift wrap per recipient for each of their DM relays and
// one for our own copy on our own relay.
func (s *Service) wrapAll(ctx context.Context, rumor *nostr.Event, peers []string, exp int64, hints []string) ([]delivery, error) {
	var dels []delivery
	created := s.now().Unix()
	for _, p := range peers {
		relays, err := s.dmRelaysFor(ctx, p, hints)
		if err != nil {
			return nil, err
		}
		wrap, err := s.w.Wrap(*rumor, p, exp)
		if err != nil {
			return nil, err
		}
		raw := wrap.String()
		for _, r := range relays {
			dels = append(dels, delivery{WrapID: wrap.ID, Relay: r, RumorID: rumor.ID, Recipient: p, Wrap: raw, CreatedAt: created, ExpiresAt: exp})
		}
	}
	own, err := s.w.Wrap(*rumor, s.pk, exp)
	if err != nil {
		return nil, err
	}
	dels = append(dels, delivery{WrapID: own.ID, Relay: NormalizeRelay(s.cfg.RelayURL), RumorID: rumor.ID, Recipient: s.pk, Self: true, Wrap: own.String(), CreatedAt: created, ExpiresAt: exp})
	return dels, nil
}

// Delete deletes one of our messages: a kind 5 rumor naming it is
// gift-wrapped to every participant; their services remove it. It is removed
// from our store at once.
func (s *Service) Delete(ctx context.Context, messageID string) error {
	m, err := s.st.message(ctx, messageID)
	if err != nil {
		return err
	}
	if m.Sender != s.pk {
		return fmt.Errorf("chat: message %s is not ours to delete", messageID)
	}
	participants, _, err := s.st.conversation(ctx, m.Conversation)
	if err != nil {
		return err
	}
	var peers []string
	tags := nostr.Tags{{"e", messageID}, {"k", fmt.Sprint(m.Kind)}}
	for _, p := range participants {
		if p != s.pk {
			peers = append(peers, p)
			tags = append(tags, nostr.Tag{"p", p})
		}
	}
	now := s.now()
	exp := int64(0)
	if !m.ExpiresAt.IsZero() {
		exp = m.ExpiresAt.Unix()
		tags = append(tags, expirationTag(exp))
	}
	rumor := s.w.NewRumor(KindDeletion, "", tags, now)
	dels, err := s.wrapAll(ctx, &rumor, peers, exp, nil)
	if err != nil {
		return err
	}
	tx, err := s.st.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("chat: delete: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, _, err := deleteMessage(ctx, tx, messageID, s.pk, now.Unix()); err != nil {
		return fmt.Errorf("chat: delete: %w", err)
	}
	for _, d := range dels {
		if err := insertDelivery(ctx, tx, d, now.UnixMilli()); err != nil {
			return fmt.Errorf("chat: queue deletion: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("chat: delete: %w", err)
	}
	s.log.Info("message deleted", "id", messageID, "conversation", m.Conversation)
	s.afterRemoval(ctx)
	s.kick()
	s.notify(Event{Type: EventDeleted, Conversation: m.Conversation, MessageID: messageID})
	return nil
}

// Message returns one stored message.
func (s *Service) Message(ctx context.Context, id string) (*Message, error) {
	return s.st.message(ctx, id)
}

// WaitSent waits until an outgoing message leaves the queued state (sent or
// failed) and returns it.
func (s *Service) WaitSent(ctx context.Context, id string) (*Message, error) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		m, err := s.st.message(ctx, id)
		if err != nil {
			return nil, err
		}
		if m.State != StateQueued {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return m, fmt.Errorf("chat: waiting for %s: %w", id, ctx.Err())
		case <-t.C:
		}
	}
}

// HistoryOptions page through a conversation.
type HistoryOptions struct {
	Before time.Time // only messages created before this (zero: newest)
	Limit  int       // default 100
}

// History returns a conversation's messages, oldest first.
func (s *Service) History(ctx context.Context, conversationID string, opts HistoryOptions) ([]*Message, error) {
	return s.st.history(ctx, conversationID, opts.Before, opts.Limit, s.now())
}

// Conversations lists the conversations, most recent first, with unread
// counts and each peer's identity status.
func (s *Service) Conversations(ctx context.Context) ([]*Conversation, error) {
	convs, err := s.st.conversations(ctx)
	if err != nil {
		return nil, err
	}
	for _, c := range convs {
		for _, p := range c.Participants {
			if p == s.pk {
				continue
			}
			ct, err := s.contactStatus(ctx, p)
			if err != nil {
				return nil, err
			}
			c.Peers = append(c.Peers, ct)
		}
	}
	return convs, nil
}

// ConversationWith returns the id of the conversation between us and
// these addresses (it may have no messages yet).
func (s *Service) ConversationWith(ctx context.Context, addrs []string) (string, []string, error) {
	cs, err := s.ResolveAll(ctx, addrs)
	if err != nil {
		return "", nil, err
	}
	ps := []string{s.pk}
	for _, c := range cs {
		ps = append(ps, c.PubKey)
	}
	ps = normParticipants(ps)
	return ConversationID(ps), ps, nil
}

// MarkRead marks every message of a conversation read.
func (s *Service) MarkRead(ctx context.Context, conversationID string) error {
	return s.st.markRead(ctx, conversationID)
}

// SetDisappearing sets the disappearing-messages timer of the conversation
// with these addresses (0 switches it off). Messages sent afterwards carry
// a NIP-40 expiration of now + d on the rumor, the seal and the wrap.
func (s *Service) SetDisappearing(ctx context.Context, addrs []string, d time.Duration) (string, error) {
	if d < 0 {
		return "", errors.New("chat: negative timer")
	}
	id, ps, err := s.ConversationWith(ctx, addrs)
	if err != nil {
		return "", err
	}
	if err := s.st.setDisappear(ctx, id, ps, d); err != nil {
		return "", fmt.Errorf("chat: set timer: %w", err)
	}
	return id, nil
}

// PurgeExpired removes expired messages from the store now (the purger
// also runs every PurgeInterval) and returns how many were removed.
func (s *Service) PurgeExpired(ctx context.Context) (int, error) {
	gone, err := s.st.purgeExpired(ctx, s.now().Unix())
	if err != nil {
		return 0, fmt.Errorf("chat: purge: %w", err)
	}
	for id, conv := range gone {
		s.notify(Event{Type: EventExpired, Conversation: conv, MessageID: id})
	}
	if len(gone) > 0 {
		s.log.Info("expired messages purged", "count", len(gone))
		s.afterRemoval(ctx)
	} else {
		s.dropBlobs(ctx) // those whose deletion failed before
	}
	return len(gone), nil
}

// afterRemoval runs once messages were removed: it empties the store's WAL,
// so that their text is in neither file (see store.scrub), and deletes the
// blobs of the file messages we sent among them. Failures are logged; the
// next checkpoint does the same, and the next purge retries the blobs.
func (s *Service) afterRemoval(ctx context.Context) {
	if err := s.st.scrub(ctx); err != nil && ctx.Err() == nil {
		s.log.Warn("could not checkpoint the message store after removing messages", "err", err)
	}
	s.dropBlobs(ctx)
}

// dropBlobs deletes from our blob store the blobs of removed file messages
// we sent (store.blobsToDrop); a URL outside our store is only forgotten.
func (s *Service) dropBlobs(ctx context.Context) {
	todo, err := s.st.blobsToDrop(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("could not read the blobs to delete", "err", err)
		}
		return
	}
	for sha, url := range todo {
		if local, ok := s.ownBlob(url); ok && s.cfg.DeleteBlob != nil && strings.HasSuffix(local, "/"+sha) {
			if err := s.cfg.DeleteBlob(sha); err != nil {
				s.log.Warn("could not delete the blob of a removed file message; retried at the next purge", "sha256", sha, "err", err)
				continue
			}
			s.log.Info("blob of a removed file message deleted", "sha256", sha)
		}
		if err := s.st.blobDropped(ctx, sha); err != nil && ctx.Err() == nil {
			s.log.Warn("could not forget a deleted blob", "sha256", sha, "err", err)
		}
	}
}

func (s *Service) purgeLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.PurgeInterval)
	defer t.Stop()
	for {
		if _, err := s.PurgeExpired(s.ctx); err != nil && s.ctx.Err() == nil {
			s.log.Error("purge failed", "err", err)
		}
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}
