// Package node assembles an anchorchat node: the SQLite store, the personal
// relay, the public HTTP endpoints (relay, NIP-11, /metrics) and the local
// API the CLI talks to. It owns start-up and the order of a clean shutdown.
package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/btcsuite/btcd/rpcclient"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/anchorchat/anchorchat/anchor"
	"github.com/anchorchat/anchorchat/chat"
	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/payments"
	"github.com/anchorchat/anchorchat/relay"
	"github.com/anchorchat/anchorchat/storage"
	"github.com/anchorchat/anchorchat/wallet"
)

// idleTimeout closes relay-port connections idle between HTTP requests
// (a variable so tests can shorten it).
var idleTimeout = 2 * time.Minute

// Version is the node's version, set at build time with -ldflags.
var Version = "dev"

// File names inside the data dir.
const (
	DBFile      = "events.db"
	TokenFile   = "api.token"
	RuntimeFile = "node.json"
)

// Runtime is what a running node writes to RuntimeFile so the CLI can find it.
type Runtime struct {
	PID      int    `json:"pid"`
	Network  string `json:"network"`
	RelayURL string `json:"relay_url"`
	APIURL   string `json:"api_url"`
	Started  int64  `json:"started"`
}

// Node is one running anchorchat node.
type Node struct {
	cfg   *Config
	log   *slog.Logger
	store *storage.Store
	relay *relay.Relay
	reg   *prometheus.Registry
	key   *identity.Key
	nip05 *identity.NIP05Handler
	chat  *chat.Service
	pay   *payments.Engine
	lnd   *payments.LND // the tip engine's client, closed after it

	btcd    *rpcclient.Client
	wallet  *wallet.Wallet
	batcher *anchor.Batcher
	claims  *claimQueue // to the batcher, off the relay's dispatcher
	// stopClaims ends the claim queue's goroutine, before the batcher closes.
	stopClaims context.CancelFunc
	verifier   *anchor.Verifier // cached, for conversations
	// freshVerifier never caches, for `anchorchat verify`.
	freshVerifier *anchor.Verifier

	ctx     context.Context // the node's lifetime
	cancel  context.CancelFunc
	token   string
	started time.Time

	relayLn, apiLn net.Listener
	relaySrv       *http.Server
	apiSrv         *http.Server
	// stopping is the API requests' base context, cancelled when the API
	// server starts to shut down: its graceful shutdown would otherwise
	// wait for live streams (GET /v1/watch) and long requests (send
	// --wait, lookups at unresponsive relays) until its timeout.
	stopping    context.Context
	endRequests context.CancelFunc
	wg          sync.WaitGroup
	closeOnce   sync.Once
	closeErr    error
	// ranRuntime: this node wrote RuntimeFile, so Close removes it (a
	// node that failed to start leaves a running node's file alone).
	ranRuntime  bool
	revokeMu    sync.Mutex             // one revocation at a time
	handleState atomic.Pointer[string] // the configured handle as this key holds it (Status.HandleState)
}

// Start opens the store, starts the relay and the API, and writes the
// runtime file. On error, everything already started is stopped.
func Start(ctx context.Context, cfg *Config, log *slog.Logger) (*Node, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	n := &Node{cfg: cfg, log: log, reg: prometheus.NewRegistry(), started: time.Now(), nip05: identity.NewNIP05Handler(log)}
	started := false
	defer func() {
		if !started { // stop whatever did start
			n.Close()
		}
	}()
	n.ctx, n.cancel = context.WithCancel(context.Background())
	// The store first: its lock says whether a node already runs on this
	// data dir, before this one asks for a passphrase or touches the token.
	var err error
	n.store, err = storage.Open(ctx, storage.Options{
		Path:         filepath.Join(cfg.DataDir, DBFile),
		Synchronous:  cfg.DBSync,
		DefaultLimit: cfg.Relay.Limits.DefaultLimit,
		Logger:       log, // storage names itself
	})
	if errors.Is(err, storage.ErrLocked) {
		return nil, fmt.Errorf("a node is already running on %s%s: stop it first, or give this one another --datadir", cfg.DataDir, runningPID(cfg.DataDir))
	}
	if err != nil {
		return nil, fmt.Errorf("opening the event store: %w", err)
	}
	passphrase, err := n.unlockIdentity(ctx)
	if err != nil {
		return nil, err
	}
	var replaced os.FileMode
	n.token, replaced, err = loadOrCreateToken(filepath.Join(cfg.DataDir, TokenFile))
	if err != nil {
		return nil, err
	}
	if replaced != 0 {
		log.Warn("the API token file was readable by others, so the token may have leaked: replaced it with a new one, mode 0600", "file", filepath.Join(cfg.DataDir, TokenFile), "mode", replaced)
	}
	n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	rcfg := cfg.Relay
	rcfg.Version = Version
	n.relay = relay.New(rcfg, n.store, log.With("component", "relay"), relay.NewMetrics(n.reg))

	if n.relayLn, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("relay listener: %w", err)
	}
	if n.apiLn, err = net.Listen("tcp", cfg.APIListen); err != nil {
		return nil, fmt.Errorf("API listener: %w", err)
	}
	if ip := n.apiLn.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		log.Warn("the local API listens beyond loopback; it is protected only by its token", "addr", n.apiLn.Addr().String())
	}

	mux := http.NewServeMux()
	mux.Handle("/", n.relay)
	mux.Handle(identity.NIP05Path, n.nip05)
	if cfg.Metrics {
		mux.Handle("/metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{}))
	}
	// The relay port is open to the network: a connection that idles
	// between requests, or reads or writes one request for too long (blob
	// uploads and downloads are the long ones), is closed. Websockets are
	// not affected (the upgrade clears these deadlines).
	n.relaySrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: idleTimeout,
		ReadTimeout: 10 * time.Minute, WriteTimeout: 10 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	n.stopping, n.endRequests = context.WithCancel(context.Background())
	n.apiSrv = &http.Server{Handler: n.apiHandler(), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return n.stopping }}
	n.apiSrv.RegisterOnShutdown(n.endRequests)
	if err := n.setupAnchor(ctx, passphrase); err != nil {
		return nil, err
	}
	if n.batcher != nil {
		n.startClaimQueue()
	}
	n.relay.OnSaved = n.submitClaims
	n.relay.Start()
	if err := n.setupChat(mux); err != nil {
		return nil, err
	}
	if err := n.setupPayments(); err != nil {
		return nil, err
	}
	n.serve(n.relaySrv, n.relayLn, "relay")
	n.serve(n.apiSrv, n.apiLn, "api")
	if n.batcher != nil {
		n.batcher.Start(n.ctx)
	}
	if n.pay != nil { // before the messenger: it handles the tip messages the inbox delivers
		if err := n.pay.Start(ctx); err != nil {
			return nil, fmt.Errorf("tips: %w", err)
		}
	}
	if n.chat != nil {
		if err := n.chat.Start(ctx); err != nil {
			return nil, fmt.Errorf("messenger: %w", err)
		}
	}
	if err := n.publishIdentity(ctx); err != nil {
		return nil, fmt.Errorf("publishing the identity: %w", err)
	}
	if err := n.writeRuntime(); err != nil {
		return nil, err
	}
	n.ranRuntime = true
	started = true
	log.Info("node started", "network", cfg.Network, "relay", n.RelayURL(), "api", n.APIURL(),
		"datadir", cfg.DataDir, "owner", cfg.Relay.Owner, "open", cfg.Relay.Open)
	return n, nil
}

func (n *Node) serve(srv *http.Server, ln net.Listener, name string) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("server stopped", "server", name, "err", err)
		}
	}()
}

// RelayURL is the websocket URL of the node's relay, as this machine
// reaches it (what the node's own messenger dials and names in its AUTH).
func (n *Node) RelayURL() string { return "ws://" + n.localAddr() }

// HTTPURL is the relay's address as an http URL (NIP-11, /metrics).
func (n *Node) HTTPURL() string { return "http://" + n.localAddr() }

// localAddr is the relay listener's address, with loopback for a wildcard
// listen address (0.0.0.0 or ::): "[::]:4848" is no address to dial, and
// the relay accepts an AUTH naming the address a connection arrived on.
func (n *Node) localAddr() string {
	ap, err := netip.ParseAddrPort(n.relayLn.Addr().String())
	if err != nil {
		return n.relayLn.Addr().String()
	}
	if ap.Addr().IsUnspecified() {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), ap.Port()).String()
	}
	return ap.String()
}

// PublicHTTPURL is the http(s) URL others reach the relay's port at: from
// relay.url when it is set, else HTTPURL. Blob URLs in file messages use it.
func (n *Node) PublicHTTPURL() string {
	if n.cfg.Relay.URL != "" {
		if base, err := publicHTTPBase(n.cfg.Relay.URL); err == nil {
			return base
		}
	}
	return n.HTTPURL()
}

// APIURL is the base URL of the local API.
func (n *Node) APIURL() string { return "http://" + n.apiLn.Addr().String() }

// Store is the node's event store.
func (n *Node) Store() *storage.Store { return n.store }

// Relay is the node's relay.
func (n *Node) Relay() *relay.Relay { return n.relay }

func (n *Node) writeRuntime() error {
	rt := Runtime{PID: os.Getpid(), Network: n.cfg.Network, RelayURL: n.RelayURL(), APIURL: n.APIURL(), Started: n.started.Unix()}
	b, err := json.MarshalIndent(rt, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(n.cfg.DataDir, RuntimeFile), append(b, '\n'), 0o600)
}

// Close shuts down in order: stop accepting connections, drop the open
// ones, flush queued writes and close the database. It is safe to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		for _, srv := range []*http.Server{n.relaySrv, n.apiSrv} {
			if srv != nil {
				_ = srv.Shutdown(ctx) // websockets are hijacked: the relay closes those
			}
		}
		for _, ln := range []net.Listener{n.relayLn, n.apiLn} {
			if ln != nil {
				_ = ln.Close()
			}
		}
		if n.chat != nil {
			if err := n.chat.Close(); err != nil {
				n.log.Warn("closing the messenger", "err", err)
			}
		}
		if n.pay != nil {
			if err := n.pay.Close(); err != nil {
				n.log.Warn("closing the tip engine", "err", err)
			}
		}
		if n.lnd != nil {
			_ = n.lnd.Close()
		}
		if n.stopClaims != nil {
			n.stopClaims()
		}
		if n.batcher != nil {
			if err := n.batcher.Close(); err != nil {
				n.log.Warn("closing the anchor batcher", "err", err)
			}
		}
		if n.btcd != nil {
			n.btcd.Shutdown()
		}
		if n.cancel != nil {
			n.cancel()
		}
		if n.relay != nil {
			n.relay.Close()
		}
		if n.store != nil {
			n.closeErr = n.store.Close()
		}
		if n.key != nil {
			n.key.Wipe()
		}
		n.wg.Wait()
		if n.ranRuntime {
			_ = os.Remove(filepath.Join(n.cfg.DataDir, RuntimeFile))
		}
		if n.closeErr != nil {
			n.log.Error("closing the event store", "err", n.closeErr)
		} else if n.ranRuntime {
			n.log.Info("node stopped")
		}
	})
	return n.closeErr
}

// Run starts a node and serves until ctx is done, then shuts down cleanly.
// A stop asked for while the node starts (ctx done, and Start failing for
// it) is a clean stop too: Start undoes what it did, and Run returns nil.
func Run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	n, err := Start(ctx, cfg, log)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			log.Info("node stopped during start-up", "why", context.Cause(ctx))
			return nil
		}
		return err
	}
	<-ctx.Done()
	log.Info("shutting down")
	return n.Close()
}

// runningPID names the pid in dataDir's runtime file, if it has one, for
// the error of a node that finds another running there.
func runningPID(dataDir string) string {
	b, err := os.ReadFile(filepath.Join(dataDir, RuntimeFile))
	var rt Runtime
	if err != nil || json.Unmarshal(b, &rt) != nil || rt.PID <= 0 {
		return ""
	}
	return fmt.Sprintf(" (pid %d)", rt.PID)
}

// writeFileAtomic writes data to a temp file in path's directory, syncs it and renames it over path.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
