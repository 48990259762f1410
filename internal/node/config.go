package node

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nbd-wtf/go-nostr/nip19"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/internal/config"
	"github.com/anchorchat/anchorchat/internal/nostrclient"
	"github.com/anchorchat/anchorchat/relay"
)

// EnvPrefix prefixes the environment variable of every setting.
const EnvPrefix = "ANCHORCHAT_"

// Networks are the Bitcoin networks a node can run on; each has its own data
// dir and default ports.
var Networks = map[string]int{"mainnet": 4848, "testnet": 14848, "signet": 24848, "regtest": 34848}

// Config is a node's configuration.
type Config struct {
	Network    string
	DataDir    string
	ConfigFile string
	Listen     string // relay websocket, NIP-11, NIP-05 and /metrics
	APIListen  string // local API for the CLI (loopback)
	LogLevel   string
	LogFormat  string
	DBSync     string
	Metrics    bool

	Relay relay.Config

	// Identity and profile.
	Handle         string
	PassphraseFile string
	DMRelays       config.StringList
	PublishRelays  config.StringList
	ProfileName    string
	ProfileAbout   string
	LNNodePubkey   string

	// AllowPrivateFileHosts lets `fetch` download attachments from loopback
	// and LAN addresses (chat.Config.AllowPrivateFileHosts); Load makes it
	// true on regtest unless it is set.
	AllowPrivateFileHosts bool
	// AllowPrivateRelays lets the messenger dial relays other people name
	// (contacts' DM relay lists, relay hints) at loopback and LAN addresses
	// (chat.Config.AllowPrivateRelays); Load makes it true on regtest
	// unless it is set.
	AllowPrivateRelays bool

	// The user's LND (tips): gRPC address, TLS cert and macaroon paths.
	// The files are read from these paths; their contents never reach logs or events.
	LND      LNDConfig
	Payments PaymentsConfig
	Btcd     BtcdConfig
	Anchor   AnchorConfig

	owner   string
	allow   config.StringList
	aliases config.StringList
	proxies config.StringList
}

// LNDConfig is how the node reaches the user's LND.
type LNDConfig struct {
	RPCServer    string
	TLSCertPath  string
	MacaroonPath string
}

// Configured reports whether an LND connection is set.
func (l LNDConfig) Configured() bool { return l.RPCServer != "" }

const (
	flagAllowPrivateFileHosts = "files.allow-private-hosts"
	flagAllowPrivateRelays    = "chat.allow-private-relays"
)

// DefaultDataDir is ~/.anchorchat/<network>.
func DefaultDataDir(network string) string {
	home, err := os.UserHomeDir()
	if err != nil {
		home = "."
	}
	return filepath.Join(home, ".anchorchat", network)
}

// BindFlags defines the node's flags on fs and returns the Config they fill.
// Call Resolve after parsing.
func BindFlags(fs *flag.FlagSet) *Config {
	c := &Config{Relay: relay.DefaultConfig()}
	l := &c.Relay.Limits
	fs.StringVar(&c.Network, "network", "mainnet", "Bitcoin network: mainnet, testnet, signet or regtest")
	fs.StringVar(&c.DataDir, "datadir", "", "data directory (default ~/.anchorchat/<network>)")
	fs.StringVar(&c.ConfigFile, "config", "", "config file of \"name = value\" lines (default <datadir>/anchorchat.conf, which may be missing; a file named here must exist)")
	fs.StringVar(&c.Listen, "listen", "", "relay address, host:port (default 127.0.0.1:4848 on mainnet, 14848 testnet, 24848 signet, 34848 regtest)")
	fs.StringVar(&c.APIListen, "api.listen", "", "local API address for the CLI, host:port on loopback (default: relay port + 1)")
	fs.StringVar(&c.LogLevel, "log.level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log.format", "text", "log format: text or json")
	fs.StringVar(&c.DBSync, "db.sync", "FULL", "SQLite synchronous mode of the relay's events.db: FULL (an acknowledged event survives power loss) or NORMAL (survives a crash of the process); chat.db runs NORMAL, payments.db and anchor.db FULL")
	fs.BoolVar(&c.Metrics, "metrics", true, "serve Prometheus metrics at /metrics on the relay address")

	fs.StringVar(&c.Handle, "handle", "", "this user's handle (lowercase letters, digits, _ - .); claimed and served over NIP-05")
	fs.StringVar(&c.PassphraseFile, "passphrase-file", "", "file holding the identity passphrase; or set ANCHORCHAT_PASSPHRASE (not both); with neither, a prompt")
	fs.Var(&c.DMRelays, "dm-relays", "relays where this user receives DMs, published as kind 10050 (default: this node's relay)")
	fs.Var(&c.PublishRelays, "publish-relays", "other relays to publish the profile, DM relay list and handle claim to")
	fs.StringVar(&c.ProfileName, "profile.name", "", "name in the kind 0 profile (default: the handle)")
	fs.StringVar(&c.ProfileAbout, "profile.about", "", "about text in the kind 0 profile")
	fs.StringVar(&c.LNNodePubkey, "ln.node-pubkey", "", "this user's LND node pubkey (66 hex), named in the handle claim")
	fs.BoolVar(&c.AllowPrivateFileHosts, flagAllowPrivateFileHosts, false, "download attachments from loopback and private (LAN) addresses too; otherwise a file URL must resolve to a public address (default: true on regtest)")
	fs.BoolVar(&c.AllowPrivateRelays, flagAllowPrivateRelays, false, "connect to relays other people name (their DM relay lists, relay hints) at loopback and private (LAN) addresses too; otherwise such a relay must resolve to a public address (default: true on regtest)")

	fs.StringVar(&c.LND.RPCServer, "lnd.rpcserver", "", "the user's LND gRPC address, host:port (for tips)")
	fs.StringVar(&c.LND.TLSCertPath, "lnd.tlscertpath", "", "path of LND's tls.cert")
	fs.StringVar(&c.LND.MacaroonPath, "lnd.macaroonpath", "", "path of the LND macaroon the node uses (see docs/payments.md for the permissions)")

	fs.StringVar(&c.Btcd.RPCServer, "btcd.rpcserver", "", "btcd RPC host:port, for anchoring handles and verifying contacts on-chain")
	fs.StringVar(&c.Btcd.RPCUser, "btcd.rpcuser", "", "btcd RPC user")
	fs.StringVar(&c.Btcd.RPCPass, "btcd.rpcpass", "", "btcd RPC password")
	fs.StringVar(&c.Btcd.RPCCert, "btcd.rpccert", "", "path of btcd's rpc.cert")
	fs.DurationVar(&c.Anchor.Interval, "anchor.interval", 10*time.Minute, "anchor pending claims this long after the first arrived")
	fs.IntVar(&c.Anchor.MaxBatch, "anchor.max-batch", 100_000, "anchor as soon as this many claims are pending")
	fs.IntVar(&c.Anchor.Confirmations, "anchor.confirmations", 6, "confirmations before attesting, and before a contact counts as VERIFIED")
	fs.DurationVar(&c.Anchor.PollInterval, "anchor.poll-interval", 30*time.Second, "how often the batcher checks the chain for confirmations, stuck transactions and reorgs")
	fs.BoolVar(&c.Anchor.AcceptOthers, "anchor.accept-others", false, "also anchor claims other people publish to this relay (with relay.open)")

	fs.Int64Var(&c.Payments.MaxTipSat, "payments.max-tip-sat", 100_000, "largest outgoing tip, in sat")
	fs.Int64Var(&c.Payments.DailyLimitSat, "payments.daily-limit-sat", 1_000_000, "outgoing tips in any 24 hours, in sat (fees excluded)")
	fs.Int64Var(&c.Payments.MaxReceiveSat, "payments.max-receive-sat", 10_000_000, "largest tip request this node invoices, in sat")
	fs.Int64Var(&c.Payments.FeeLimitPPM, "payments.fee-limit-ppm", 10_000, "routing fee limit per tip, parts per million of the amount")
	fs.Int64Var(&c.Payments.FeeLimitMinSat, "payments.fee-limit-min-sat", 10, "routing fee limit per tip at least this many sat")

	fs.StringVar(&c.owner, "relay.owner", "", "the relay owner's pubkey (hex or npub); default: this node's identity")
	fs.Var(&c.allow, "relay.allow", "pubkeys (hex or npub, comma-separated) that may publish like the owner")
	fs.BoolVar(&c.Relay.Open, "relay.open", false, "accept events from anyone (a public relay); private mail stays private")
	fs.StringVar(&c.Relay.URL, "relay.url", "", "public websocket URL of the relay, ws:// or wss://: NIP-42 AUTH may name it and file messages name blobs under it; set it behind a proxy (default: the address a client connects to)")
	fs.Var(&c.aliases, "relay.alias", "more public websocket URLs of the relay (an onion address, a LAN name), comma-separated, that NIP-42 AUTH may name")
	fs.Var(&c.proxies, "relay.trusted-proxy", "addresses or CIDR ranges of reverse proxies in front of the relay, comma-separated: a connection from one is rate-limited by the client address it appends to X-Forwarded-For (default: none; the header is ignored)")
	fs.StringVar(&c.Relay.Name, "relay.name", c.Relay.Name, "relay name in the NIP-11 document")
	fs.StringVar(&c.Relay.Contact, "relay.contact", "", "contact in the NIP-11 document")
	fs.IntVar(&l.MaxMessageLength, "relay.max-message-length", l.MaxMessageLength, "largest websocket frame in bytes; larger ones are refused")
	fs.IntVar(&l.MaxSubscriptions, "relay.max-subscriptions", l.MaxSubscriptions, "open subscriptions per connection")
	fs.IntVar(&l.MaxFilters, "relay.max-filters", l.MaxFilters, "filters per REQ or COUNT")
	fs.IntVar(&l.MaxFilterValues, "relay.max-filter-values", l.MaxFilterValues, "values (ids, authors, kinds, tag values) one REQ or COUNT may list, and one connection's open subscriptions in all (0: unlimited)")
	fs.IntVar(&l.MaxLimit, "relay.max-limit", l.MaxLimit, "largest filter limit honoured (larger ones are capped)")
	fs.IntVar(&l.DefaultLimit, "relay.default-limit", l.DefaultLimit, "limit applied to a filter without one")
	fs.IntVar(&l.MaxEventTags, "relay.max-event-tags", l.MaxEventTags, "tags per event")
	fs.IntVar(&l.MaxContentLength, "relay.max-content-length", l.MaxContentLength, "characters (Unicode code points) of content per event")
	fs.DurationVar(&l.MaxFutureSkew, "relay.max-future-skew", l.MaxFutureSkew, "refuse events dated further than this in the future")
	fs.DurationVar(&l.MaxPastAge, "relay.max-past-age", l.MaxPastAge, "refuse events older than this, 0 for no limit (gift wraps get 48h more)")
	fs.Float64Var(&l.EventsPerSecondPerIP, "relay.events-per-second-ip", l.EventsPerSecondPerIP, "EVENT and AUTH rate per client IP (0: unlimited)")
	fs.IntVar(&l.EventBurstPerIP, "relay.event-burst-ip", l.EventBurstPerIP, "EVENT and AUTH burst per client IP")
	fs.Float64Var(&l.EventsPerSecondPerPubkey, "relay.events-per-second-pubkey", l.EventsPerSecondPerPubkey, "EVENT rate per author other than the owner and allowlist (0: unlimited)")
	fs.IntVar(&l.EventBurstPerPubkey, "relay.event-burst-pubkey", l.EventBurstPerPubkey, "EVENT burst per author")
	fs.Float64Var(&l.ReqsPerSecondPerIP, "relay.reqs-per-second-ip", l.ReqsPerSecondPerIP, "REQ and COUNT rate per client IP (0: unlimited)")
	fs.IntVar(&l.ReqBurstPerIP, "relay.req-burst-ip", l.ReqBurstPerIP, "REQ and COUNT burst per client IP")
	fs.IntVar(&l.MaxConnectionsPerIP, "relay.max-connections-ip", l.MaxConnectionsPerIP, "simultaneous connections per client IP (0: unlimited)")
	return c
}

// Load parses args with the node's flags, then fills what they leave unset
// from the environment and the config file.
func Load(fs *flag.FlagSet, args []string, getenv func(string) string) (*Config, error) {
	c := BindFlags(fs)
	src, err := config.Parse(fs, args)
	if err != nil {
		return nil, err
	}
	if err := config.ApplyEnv(fs, EnvPrefix, getenv, src); err != nil {
		return nil, err
	}
	if _, ok := Networks[c.Network]; !ok {
		return nil, fmt.Errorf("unknown network %q: use mainnet, testnet, signet or regtest", c.Network)
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir(c.Network)
	}
	if c.ConfigFile == "" {
		c.ConfigFile = filepath.Join(c.DataDir, "anchorchat.conf")
	}
	network, dataDir, configFile := c.Network, c.DataDir, c.ConfigFile
	if src["config"] != "" { // named outright: a typo must not run the node on defaults
		if _, err := os.Stat(c.ConfigFile); err != nil {
			return nil, fmt.Errorf("config file: %w", err)
		}
	}
	if err := config.ApplyFile(fs, c.ConfigFile, src); err != nil {
		return nil, err
	}
	// These three chose the file, which may repeat them but not move the
	// node after the fact (a regtest node in the mainnet data dir). A data
	// dir named outright may record its network (identity create writes
	// it there).
	moved := func(name, before, after string) error {
		if src[name] != "file" || filepath.Clean(after) == filepath.Clean(before) {
			return nil
		}
		return fmt.Errorf("%s sets %s = %s, but it was read as the config file of %s %s: set %s with --%s or %s%s",
			configFile, name, after, name, before, name, name, EnvPrefix, strings.ToUpper(name))
	}
	if src["datadir"] == "" {
		if err := moved("network", network, c.Network); err != nil {
			return nil, err
		}
	}
	if err := errors.Join(moved("datadir", dataDir, c.DataDir), moved("config", configFile, c.ConfigFile)); err != nil {
		return nil, err
	}
	if src[flagAllowPrivateFileHosts] == "" && c.Network == "regtest" {
		c.AllowPrivateFileHosts = true // every regtest node and blob store is on loopback
	}
	if src[flagAllowPrivateRelays] == "" && c.Network == "regtest" {
		c.AllowPrivateRelays = true // every regtest node's relay is on loopback
	}
	return c, c.Resolve()
}

// Resolve checks the configuration and fills in derived defaults.
func (c *Config) Resolve() error {
	port, ok := Networks[c.Network]
	if !ok {
		return fmt.Errorf("unknown network %q: use mainnet, testnet, signet or regtest", c.Network)
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir(c.Network)
	}
	if c.Listen == "" {
		c.Listen = fmt.Sprintf("127.0.0.1:%d", port)
	}
	if c.APIListen == "" {
		// The relay's port + 1, on loopback; a relay on port 0 gets an API on port 0.
		_, p, err := net.SplitHostPort(c.Listen)
		if err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		rp, err := strconv.Atoi(p)
		if err != nil {
			return fmt.Errorf("listen: bad port %q", p)
		}
		if rp == 0 {
			c.APIListen = "127.0.0.1:0"
		} else {
			c.APIListen = fmt.Sprintf("127.0.0.1:%d", rp+1)
		}
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		return err
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("log.format must be text or json, not %q", c.LogFormat)
	}
	switch c.DBSync = strings.ToUpper(c.DBSync); c.DBSync {
	case "FULL", "NORMAL":
	default:
		return fmt.Errorf("db.sync must be FULL or NORMAL, not %q", c.DBSync)
	}
	if c.owner != "" {
		pk, err := ParsePubkey(c.owner)
		if err != nil {
			return fmt.Errorf("relay.owner: %w", err)
		}
		c.Relay.Owner = pk
	}
	var err error
	if c.Relay.Allow, err = parseEach("relay.allow", c.allow, ParsePubkey); err != nil {
		return err
	}
	if c.Handle != "" {
		h, err := identity.NormalizeHandle(c.Handle)
		if err != nil {
			return fmt.Errorf("handle: %w", err)
		}
		c.Handle = h
	}
	if c.LND.Configured() {
		for name, path := range map[string]string{"lnd.tlscertpath": c.LND.TLSCertPath, "lnd.macaroonpath": c.LND.MacaroonPath} {
			if path == "" {
				return fmt.Errorf("lnd.rpcserver is set but %s is not", name)
			}
			if _, err := os.Stat(path); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	if c.Btcd.Configured() && c.Btcd.RPCCert == "" {
		return errors.New("btcd.rpcserver is set but btcd.rpccert is not (btcd always speaks TLS)")
	}
	if c.Relay.URL != "" {
		if _, err := publicHTTPBase(c.Relay.URL); err != nil {
			return fmt.Errorf("relay.url: %w", err)
		}
	}
	if c.Relay.Aliases, err = parseEach("relay.alias", c.aliases, func(a string) (string, error) {
		_, err := publicHTTPBase(a)
		return a, err
	}); err != nil {
		return err
	}
	if c.Relay.TrustedProxies, err = parseEach("relay.trusted-proxy", c.proxies, parseProxy); err != nil {
		return err
	}
	if c.Relay.Limits.MaxMessageLength < 1024 {
		return errors.New("relay.max-message-length must be at least 1024 bytes")
	}
	if c.Relay.Limits.DefaultLimit > c.Relay.Limits.MaxLimit {
		c.Relay.Limits.DefaultLimit = c.Relay.Limits.MaxLimit
	}
	return nil
}

// ParsePubkey accepts a pubkey as 64 hex characters or an npub.
func ParsePubkey(s string) (string, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "nsec1") || strings.HasPrefix(s, "ncryptsec1") {
		// Not echoed: errors reach terminals and service logs.
		return "", errors.New("that is a secret key, not a public key: give its npub (anchorchat id show prints yours), and keep the secret key out of settings")
	}
	if strings.HasPrefix(s, "npub1") {
		prefix, v, err := nip19.Decode(s)
		if err != nil || prefix != "npub" {
			return "", fmt.Errorf("bad npub %q", s)
		}
		return v.(string), nil
	}
	if len(s) != 64 || strings.Trim(strings.ToLower(s), "0123456789abcdef") != "" {
		return "", fmt.Errorf("a pubkey is 64 hex characters or an npub, not %q", s)
	}
	return strings.ToLower(s), nil
}

// ParseLevel maps a level name to a slog level.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("log.level must be debug, info, warn or error, not %q", s)
	}
	return l, nil
}

// NewLogger builds the node's slog logger.
func (c *Config) NewLogger(w io.Writer) *slog.Logger {
	level, _ := ParseLevel(c.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// shutdownTimeout bounds a graceful shutdown.
const shutdownTimeout = 15 * time.Second

// publicHTTPBase turns the relay's public websocket URL into the http(s)
// base URL the same server answers on: ws becomes http, wss https; the path
// stays (a relay behind a reverse proxy at wss://host/chat serves its blobs
// at https://host/chat/blobs).
func publicHTTPBase(wsURL string) (string, error) {
	u, err := nostrclient.HTTPURL(wsURL)
	if err != nil {
		return "", err
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%q: want ws[s]://host[:port][/path], without user, query or fragment", wsURL)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

// parseEach parses every value of a list setting, naming the setting in an error.
func parseEach[T any](name string, values []string, parse func(string) (T, error)) ([]T, error) {
	out := make([]T, 0, len(values))
	for _, v := range values {
		p, err := parse(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// parseProxy reads a trusted proxy: one address, or a CIDR range.
func parseProxy(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an address or a CIDR range", s)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			// Client addresses are compared unmapped: ::ffff:10.0.0.0/104 is 10.0.0.0/8.
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or a CIDR range", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}
