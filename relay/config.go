package relay

import (
	"net/netip"
	"time"
)

// Private kinds: a NIP-04 DM (4), a NIP-59 seal (13) and a NIP-59 gift wrap
// (1059). The relay serves them only to an authenticated user they are
// p-tagged to.
var PrivateKinds = []int{4, 13, 1059}

// GiftWrapBackdate is how far NIP-59 lets a gift wrap's created_at lie in the
// past ("up to two days"). Gift wraps get this much on top of MaxPastAge.
const GiftWrapBackdate = 48 * time.Hour

// Config is the relay's configuration. The zero value is not useful: start
// from DefaultConfig and change what you need.
type Config struct {
	Name        string
	Description string
	Contact     string
	Software    string
	Version     string

	// URL is the relay's public websocket URL (ws:// or wss://), used to check
	// the "relay" tag of NIP-42 AUTH events. Besides it, an AUTH may name the
	// address the connection arrived on (localhost for loopback); the Host
	// header is never trusted. Behind a proxy, set it.
	URL string
	// Aliases are more public URLs of the relay (an onion address, a LAN
	// name) that an AUTH may name.
	Aliases []string

	// TrustedProxies are the addresses of reverse proxies in front of the
	// relay. A connection from one of them is held to the per-IP limits of
	// the client its X-Forwarded-For names: the rightmost address there that
	// is not itself a trusted proxy. From any other peer the header is
	// ignored. Empty (the default): the limits apply to the TCP peer.
	TrustedProxies []netip.Prefix

	// Owner is the hex pubkey of the node's user. Owner and Allow may publish
	// anything; anyone may deliver gift wraps (kind 1059) p-tagged to them.
	Owner string
	Allow []string
	// Open accepts events from anyone (a public relay). Private kinds stay private.
	Open bool

	Limits Limits

	// PingInterval: a connection the relay has heard nothing from (no
	// frame, no pong) for this long gets a websocket ping, and one still
	// silent a PingInterval later is closed, freeing its place in the
	// per-IP connection limit (a client that vanished without a close, a
	// laptop asleep, a NAT that forgot the flow). 0: DefaultPingInterval;
	// negative: never.
	PingInterval time.Duration

	// WriteTimeout bounds one write to a client's socket: a client that
	// reads nothing for this long while the relay has something for it is
	// closed. 0: DefaultWriteTimeout.
	WriteTimeout time.Duration
}

// DefaultPingInterval is Config.PingInterval's default.
const DefaultPingInterval = 45 * time.Second

// DefaultWriteTimeout is Config.WriteTimeout's default.
const DefaultWriteTimeout = 30 * time.Second

// Limits bounds what a client may ask of the relay. All are published in the NIP-11 document.
type Limits struct {
	MaxMessageLength int // bytes in one websocket frame
	MaxSubscriptions int // open subscriptions per connection
	MaxFilters       int // filters in one REQ or COUNT
	// MaxFilterValues bounds the values (ids, authors, kinds and tag
	// values, a value repeated within one list counted once) that one REQ
	// or COUNT may list across its filters, and that one connection's open
	// subscriptions may list in all: they are held, and searched for every
	// live event, for as long as the subscriptions are open.
	MaxFilterValues  int
	MaxLimit         int // largest "limit" honoured in a filter; larger ones are capped
	DefaultLimit     int // "limit" applied to a filter that has none
	MaxSubIDLength   int
	MaxEventTags     int
	MaxContentLength int // characters (Unicode code points) of an event's content, as NIP-11 counts them

	// MaxFutureSkew refuses events whose created_at is further than this in the future.
	MaxFutureSkew time.Duration
	// MaxPastAge refuses events older than this (0: no lower bound). Gift
	// wraps are allowed GiftWrapBackdate more, since NIP-59 back-dates them.
	MaxPastAge time.Duration

	// Token buckets on EVENTs: per client IP (AUTHs draw on it too) and per
	// event author. A rate of 0 disables that bucket.
	EventsPerSecondPerIP     float64
	EventBurstPerIP          int
	EventsPerSecondPerPubkey float64
	EventBurstPerPubkey      int
	// REQ and COUNT per client IP.
	ReqsPerSecondPerIP float64
	ReqBurstPerIP      int
	// MaxConnectionsPerIP caps simultaneous websocket connections from one IP (0: no cap).
	MaxConnectionsPerIP int
}

// DefaultConfig returns the safe defaults of a personal relay: closed to
// everyone but the owner, the allowlist and gift-wrapped mail addressed to them.
func DefaultConfig() Config {
	return Config{
		Name:        "anchorchat personal relay",
		Description: "A personal relay: the owner's outbox, and an inbox for gift-wrapped mail to the owner.",
		Software:    "https://github.com/anchorchat/anchorchat",
		Version:     "dev",
		Limits: Limits{
			MaxMessageLength:         256 << 10,
			MaxSubscriptions:         32,
			MaxFilters:               16,
			MaxFilterValues:          10_000,
			MaxLimit:                 1000,
			DefaultLimit:             500,
			MaxSubIDLength:           64,
			MaxEventTags:             2500,
			MaxContentLength:         128 << 10,
			MaxFutureSkew:            15 * time.Minute,
			EventsPerSecondPerIP:     50,
			EventBurstPerIP:          500,
			EventsPerSecondPerPubkey: 20,
			EventBurstPerPubkey:      200,
			ReqsPerSecondPerIP:       20,
			ReqBurstPerIP:            100,
			MaxConnectionsPerIP:      64,
		},
	}
}

// hardMessageLimit is the frame size beyond which the relay stops reading and
// drops the connection: between MaxMessageLength and this, it drains the
// frame, answers with an error and keeps the connection.
func (l Limits) hardMessageLimit() int64 {
	return int64(l.MaxMessageLength) * 16
}
