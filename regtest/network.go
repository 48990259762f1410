// Package regtest runs a real Bitcoin + Lightning regtest network: btcd, N
// LND nodes, an on-chain wallet that mines and funds, channels between the
// LNDs, and (through a hook) M anchorchat nodes. Tests use Start; the
// `anchorchat regtest` command uses Main.
package regtest

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/anchorchat/anchorchat/internal/freeport"
	"github.com/anchorchat/anchorchat/wallet"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/rpcclient"
	"github.com/lightningnetwork/lnd/lnrpc"
)

const (
	// SegwitHeight: btcd activates segwit and taproot on regtest from here.
	SegwitHeight = 432
	// InitialBlocks are mined before anything else: past SegwitHeight, and
	// the early coinbases are long mature.
	InitialBlocks = SegwitHeight + 8
	// ChannelConfs are mined after opening channels.
	ChannelConfs = 6

	walletPassword = "regtest"
	rpcUser        = "anchorchat"
	rpcPass        = "regtest"
)

// Params are the chain parameters of the network.
var Params = &chaincfg.RegressionNetParams

// ChannelSpec is a channel to open from LND From to LND To.
type ChannelSpec struct {
	From, To int
	Capacity btcutil.Amount // 0 means Options.ChannelSats
	Push     btcutil.Amount // given to To at opening
}

// NodeSpec is what an anchorchat node needs to run against the network;
// passed to Options.StartNode.
type NodeSpec struct {
	Index int
	Name  string // "node-0", ...
	Dir   string // an empty directory for the node's data
	// LND is the LND node this node uses (node i uses LND i mod N).
	LND LNDState
	// Btcd is the chain backend (for the anchoring wallet).
	Btcd BtcdState
	// Network is "regtest".
	Network string
}

// NodeInfo describes a started node. The harness stops it by PID (SIGTERM,
// then SIGKILL) before the LNDs; Binary, when set, guards against PID reuse
// (it must equal the process's argv[0]).
type NodeInfo struct {
	PID     int
	Binary  string
	URL     string            // e.g. the node's relay URL
	LogPath string            // dumped when a test fails
	Info    map[string]string // printed by `regtest up`/`status`
}

// StartNodeFunc starts anchorchat node spec.Index and returns once it is
// ready. The process must outlive the call (use Setsid or Setpgid so a
// terminal's Ctrl-C doesn't reach it).
type StartNodeFunc func(ctx context.Context, spec NodeSpec) (NodeInfo, error)

// Options configure a network. The zero value is btcd + 2 LND with one
// channel 0→1.
type Options struct {
	// Dir is the network directory (data, logs, state.json). Start uses a
	// test temp dir when empty; Up requires it.
	Dir string
	// LNDs is the number of LND nodes: 0 means 2; negative means none.
	LNDs int
	// FundSats is sent to each LND (split into several outputs so each can
	// open several channels at once). 0 means 10 BTC.
	FundSats btcutil.Amount
	// Channels to open. nil means a chain 0→1→…→N-1; with BothDirections
	// each default channel gets its reverse too. NoChannels opens none.
	Channels       []ChannelSpec
	BothDirections bool
	NoChannels     bool
	// ChannelSats is the default capacity (0 means 5,000,000 sat) and
	// PushSats the default push amount.
	ChannelSats, PushSats btcutil.Amount
	// Nodes anchorchat nodes are started with StartNode after the LNDs
	// (AnchorchatNodes runs real anchorchat nodes). Nodes > 0 with a nil
	// StartNode is an error.
	Nodes     int
	StartNode StartNodeFunc
	// Binaries to use; nil means EnsureBinaries (build if not cached).
	Binaries *Binaries
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Network is a running regtest network.
type Network struct {
	Dir    string
	State  State
	Btcd   *rpcclient.Client
	LNDs   []*LND
	Wallet *wallet.Wallet
	Nodes  []NodeInfo

	log       *slog.Logger
	btcd      *proc
	closeOnce sync.Once
	closeErr  error
}

// Start brings a network up for a test, fails the test if it can't, and
// registers a cleanup that stops LNDs before btcd and dumps each process's
// log tail if the test failed.
func Start(t testing_TB, opts Options) *Network {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	if opts.Binaries == nil {
		if _, ok := CachedBinaries(); !ok {
			if dl, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
				if d, ok := dl.Deadline(); ok && time.Until(d) < 20*time.Minute {
					t.Fatalf("regtest: btcd/lnd are not built yet (cache %s) and building lnd takes ~9 min on 2 cores; "+
						"run `go test -timeout 60m` (or `anchorchat regtest build` first)", mustCacheDir())
				}
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	if dl, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if d, ok := dl.Deadline(); ok {
			var cancelD context.CancelFunc
			ctx, cancelD = context.WithDeadlineCause(ctx, d.Add(-startStopMargin), errTestDeadline)
			defer cancelD()
		}
	}
	n, err := Up(ctx, opts)
	if n != nil {
		t.Cleanup(func() {
			if t.Failed() {
				n.DumpLogs(t.Logf, 60)
			}
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := n.Close(sctx); err != nil {
				t.Errorf("regtest: stop network: %v", err)
			}
		})
	}
	if err != nil {
		if errors.Is(context.Cause(ctx), errTestDeadline) {
			t.Fatalf("regtest: up: %v (given up %v before the test's deadline, to stop the network in time: raise go test -timeout)", err, startStopMargin)
		}
		t.Fatalf("regtest: up: %v", err)
	}
	return n
}

var errTestDeadline = errors.New("regtest: the test's deadline is near")

// startStopMargin is the time Start leaves before the test's deadline to
// stop what it started: past the deadline the test binary panics, its
// cleanups never run, and the processes (in sessions of their own) stay.
var startStopMargin = time.Minute

// testing_TB is the part of testing.TB Start uses (an interface so this file
// does not import testing into non-test binaries).
type testing_TB interface { //nolint:revive // mirrors testing.TB
	Helper()
	TempDir() string
	Cleanup(func())
	Failed() bool
	Logf(string, ...any)
	Log(...any)
	Errorf(string, ...any)
	Fatalf(string, ...any)
}

type tWriter struct{ t testing_TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

func mustCacheDir() string {
	d, err := CacheDir()
	if err != nil {
		return "?"
	}
	return d
}

// Up brings a network up in opts.Dir. On error the returned Network (if not
// nil) holds what was started: Close it (Start does).
//
// If opts.Dir has a state file whose processes still run, Up fails with
// ErrRunning; a state file from a dead run is cleaned up (stragglers stopped,
// file removed). Old data in the directory is removed: btcd wipes the regtest
// chain at every start, so nothing from a previous run stays valid.
func Up(ctx context.Context, opts Options) (*Network, error) {
	start := time.Now()
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.Dir == "" {
		return nil, errors.New("regtest: Options.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("regtest: %w", err)
	}
	nLND := opts.LNDs
	switch {
	case nLND == 0:
		nLND = 2
	case nLND < 0:
		nLND = 0
	}
	if opts.Nodes > 0 && opts.StartNode == nil {
		return nil, fmt.Errorf("regtest: %d anchorchat nodes requested but no StartNode hook is set", opts.Nodes)
	}
	if opts.Nodes > 0 && nLND == 0 {
		return nil, errors.New("regtest: anchorchat nodes need at least one LND")
	}
	fund := opts.FundSats
	if fund == 0 {
		fund = 10 * btcutil.SatoshiPerBitcoin
	}
	chanSats := opts.ChannelSats
	if chanSats == 0 {
		chanSats = 5_000_000
	}
	channels := opts.Channels
	if opts.NoChannels {
		channels = nil
	} else if channels == nil {
		for i := 0; i+1 < nLND; i++ {
			channels = append(channels, ChannelSpec{From: i, To: i + 1})
			if opts.BothDirections {
				channels = append(channels, ChannelSpec{From: i + 1, To: i})
			}
		}
	}
	for i, c := range channels {
		if c.From < 0 || c.From >= nLND || c.To < 0 || c.To >= nLND || c.From == c.To {
			return nil, fmt.Errorf("regtest: channel %d: bad endpoints %d→%d with %d LND", i, c.From, c.To, nLND)
		}
		if channels[i].Capacity == 0 {
			channels[i].Capacity = chanSats
		}
		if channels[i].Push == 0 {
			channels[i].Push = opts.PushSats
		}
	}

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("regtest: %w", err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := cleanStale(ctx, log, dir); err != nil {
		return nil, err
	}
	for _, sub := range []string{"btcd", "wallet", "nodes"} {
		_ = os.RemoveAll(filepath.Join(dir, sub))
	}
	if old, _ := filepath.Glob(filepath.Join(dir, "lnd-*")); len(old) > 0 {
		for _, o := range old {
			_ = os.RemoveAll(o)
		}
	}

	bins := opts.Binaries
	if bins == nil {
		b, err := EnsureBinaries(ctx, log)
		if err != nil {
			return nil, err
		}
		bins = &b
	}
	ctx, cancel := context.WithTimeout(ctx, upTimeout)
	defer cancel()

	n := &Network{Dir: dir, log: log}
	n.State = State{Version: 1, Dir: dir, Started: start.UTC(), Lncli: bins.Lncli, Btcctl: bins.Btcctl}

	// Wallet first: btcd mines to its address.
	walletPath := filepath.Join(dir, "wallet", "wallet.json")
	n.State.Wallet = WalletState{Path: walletPath, Password: walletPassword}
	w, err := wallet.Create(walletPath, []byte(walletPassword), wallet.Config{Params: Params, ScryptLogN: 12, Logger: log})
	if err != nil {
		return nil, err
	}
	miningAddr, err := w.NewAddress()
	if err != nil {
		return nil, err
	}

	ports, err := upPorts(2 + 2*nLND)
	if err != nil {
		return nil, err
	}
	if err := n.startBtcd(ctx, bins.Btcd, miningAddr.EncodeAddress(), ports[0], ports[1]); err != nil {
		return n, err
	}
	w2, err := wallet.Open(walletPath, []byte(walletPassword), wallet.Config{Params: Params, Chain: wallet.NewRPCChain(n.Btcd), Logger: log})
	if err != nil {
		return n, err
	}
	n.Wallet = w2
	log.Info("btcd is up", "rpc", n.State.Btcd.RPCAddr, "elapsed", time.Since(start).Round(time.Millisecond))

	// LNDs start while btcd mines.
	for i := 0; i < nLND; i++ {
		if err := n.startLND(i, bins.Lnd, ports[2+2*i], ports[3+2*i]); err != nil {
			return n, err
		}
	}
	if _, err := n.Mine(ctx, InitialBlocks); err != nil {
		return n, err
	}
	if err := n.Wallet.Sync(ctx); err != nil {
		return n, err
	}
	log.Info("mined initial blocks", "height", InitialBlocks, "wallet", fmt.Sprintf("%+v", n.Wallet.Balance()),
		"elapsed", time.Since(start).Round(time.Millisecond))
	if err := n.writeState(); err != nil {
		return n, err
	}

	if nLND > 0 {
		if err := n.WaitLNDsSynced(ctx); err != nil {
			return n, err
		}
		log.Info("LNDs synced and active", "count", nLND, "elapsed", time.Since(start).Round(time.Millisecond))
		if err := n.fundLNDs(ctx, fund, channels); err != nil {
			return n, err
		}
		log.Info("LNDs funded", "sats_each", int64(fund), "elapsed", time.Since(start).Round(time.Millisecond))
		if err := n.openChannels(ctx, channels); err != nil {
			return n, err
		}
		if len(channels) > 0 {
			log.Info("channels open", "count", len(channels), "elapsed", time.Since(start).Round(time.Millisecond))
		}
	}
	if err := n.writeState(); err != nil {
		return n, err
	}

	for i := 0; i < opts.Nodes; i++ {
		spec := NodeSpec{
			Index: i, Name: "node-" + strconv.Itoa(i), Dir: filepath.Join(dir, "nodes", "node-"+strconv.Itoa(i)),
			LND: n.LNDs[i%nLND].LNDState, Btcd: n.State.Btcd, Network: "regtest",
		}
		if err := os.MkdirAll(spec.Dir, 0o700); err != nil {
			return n, fmt.Errorf("regtest: %w", err)
		}
		info, err := opts.StartNode(ctx, spec)
		if info.PID > 0 {
			n.Nodes = append(n.Nodes, info)
			n.State.Nodes = append(n.State.Nodes, NodeState{Name: spec.Name, PID: info.PID, Binary: info.Binary, URL: info.URL, LogPath: info.LogPath, Info: info.Info})
		}
		werr := n.writeState() // its PID, should this up be killed before the network is ready
		if err != nil {
			return n, fmt.Errorf("regtest: start %s: %w", spec.Name, err)
		}
		if werr != nil {
			return n, werr
		}
	}
	if err := n.writeState(); err != nil {
		return n, err
	}
	log.Info("regtest network up", "dir", dir, "lnds", nLND, "channels", len(channels), "nodes", opts.Nodes,
		"elapsed", time.Since(start).Round(time.Millisecond))
	return n, nil
}

// lockDir takes an exclusive flock on dir for the time Up starts a network
// there: until its state file names btcd, a second up would see no network
// and wipe the directory under the first. (The descriptor is close-on-exec:
// the children do not inherit the lock.)
func lockDir(dir string) (func(), error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("regtest: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("regtest: %w in %s: another `regtest up` is starting it", ErrRunning, dir)
		}
		return nil, fmt.Errorf("regtest: lock %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

// cleanStale refuses a live network in dir and cleans up a dead one.
func cleanStale(ctx context.Context, log *slog.Logger, dir string) error {
	st, err := ReadState(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		log.Warn("unreadable state file; removing it", "err", err)
		return os.Remove(StatePath(dir))
	}
	if st.AnyAlive() {
		return fmt.Errorf("regtest: %w in %s (btcd pid %d); stop it with `anchorchat regtest down --dir %s`",
			ErrRunning, dir, st.Btcd.PID, dir)
	}
	log.Warn("found the state file of a dead run; cleaning up", "state", StatePath(dir))
	return StopState(ctx, st)
}

func (n *Network) refreshState() {
	n.State.LNDs = n.State.LNDs[:0]
	for _, l := range n.LNDs {
		n.State.LNDs = append(n.State.LNDs, l.LNDState)
	}
}

func (n *Network) writeState() error {
	n.refreshState()
	return writeState(&n.State)
}

func (n *Network) startBtcd(ctx context.Context, bin, miningAddr string, rpcPort, p2pPort int) error {
	d := filepath.Join(n.Dir, "btcd")
	if err := os.MkdirAll(d, 0o700); err != nil {
		return fmt.Errorf("regtest: %w", err)
	}
	s := BtcdState{
		Binary: bin, RPCUser: rpcUser, RPCPass: rpcPass, RPCCert: filepath.Join(d, "rpc.cert"),
		DataDir: filepath.Join(d, "data"), LogPath: filepath.Join(d, "btcd.log"), MiningAddr: miningAddr,
	}
	for attempt := 1; ; attempt++ {
		s.RPCAddr, s.P2PAddr = "127.0.0.1:"+strconv.Itoa(rpcPort), "127.0.0.1:"+strconv.Itoa(p2pPort)
		args := []string{
			"--regtest", "--configfile=/dev/null",
			"--rpcuser=" + s.RPCUser, "--rpcpass=" + s.RPCPass,
			"--rpclisten=" + s.RPCAddr, "--listen=" + s.P2PAddr,
			"--rpccert=" + s.RPCCert, "--rpckey=" + filepath.Join(d, "rpc.key"),
			"--datadir=" + s.DataDir, "--logdir=" + filepath.Join(d, "logs"),
			"--txindex", "--miningaddr=" + miningAddr, "--debuglevel=info",
		}
		p, err := startProc("btcd", bin, args, s.LogPath)
		if err != nil {
			return err
		}
		n.btcd = p
		s.PID = p.pid
		n.State.Btcd = s
		if err := writeState(&n.State); err != nil {
			return err
		}
		client, err := dialBtcd(ctx, s, p)
		if err == nil {
			n.Btcd = client
			return nil
		}
		if attempt == maxLaunches || !p.bindFailed() {
			return err
		}
		n.log.Warn("btcd found a port taken; starting it again on others", "rpc", s.RPCAddr, "p2p", s.P2PAddr)
		ports, err := freeport.Loopback(2)
		if err != nil {
			return err
		}
		rpcPort, p2pPort = ports[0], ports[1]
	}
}

// upPorts picks the first ports of a network (a test takes some of them to
// prove that a taken port is survived).
var upPorts = freeport.Loopback

// upTimeout bounds how long Up waits for the network once the binaries are
// there (a warm up takes 15-35 s on 2 cores): a process stuck at start ends
// Up with an error naming it rather than hanging.
var upTimeout = 10 * time.Minute

// maxLaunches bounds the starts of one btcd or LND whose ports were taken
// between freeport.Loopback and its bind.
const maxLaunches = 3

// DialBtcd connects an RPC client (HTTP POST mode) to btcd.
func DialBtcd(s BtcdState) (*rpcclient.Client, error) {
	cert, err := os.ReadFile(s.RPCCert)
	if err != nil {
		return nil, fmt.Errorf("regtest: btcd rpc cert: %w", err)
	}
	c, err := rpcclient.New(&rpcclient.ConnConfig{
		Host: s.RPCAddr, User: s.RPCUser, Pass: s.RPCPass, Certificates: cert,
		HTTPPostMode: true, DisableConnectOnNew: true,
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("regtest: btcd rpc client: %w", err)
	}
	return c, nil
}

// dialBtcd waits for btcd's certificate and a working RPC.
func dialBtcd(ctx context.Context, s BtcdState, p *proc) (*rpcclient.Client, error) {
	var last error
	for {
		select {
		case <-p.exited:
			return nil, fmt.Errorf("regtest: btcd (pid %d) exited during startup; its log %s ends:\n%s", p.pid, s.LogPath, logTail(s.LogPath, 30))
		default:
		}
		if _, err := os.Stat(s.RPCCert); err == nil {
			c, err := DialBtcd(s)
			if err == nil {
				if _, err = c.GetBlockCount(); err == nil {
					return c, nil
				}
				c.Shutdown()
			}
			last = err
		}
		select {
		case <-ctx.Done():
			if last == nil {
				last = errors.New("no " + filepath.Base(s.RPCCert) + " yet")
			}
			return nil, fmt.Errorf("regtest: btcd (pid %d) did not answer RPC on %s (%v); see its log %s: %w", p.pid, s.RPCAddr, last, s.LogPath, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (n *Network) startLND(i int, bin string, rpcPort, p2pPort int) error {
	name := "lnd-" + strconv.Itoa(i)
	d := filepath.Join(n.Dir, name)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return fmt.Errorf("regtest: %w", err)
	}
	l := &LND{LNDState: LNDState{
		Name: name, Binary: bin, Dir: d, TLSCertPath: filepath.Join(d, "tls.cert"),
		MacaroonPath: filepath.Join(d, "data", "chain", "bitcoin", "regtest", "admin.macaroon"),
		LogPath:      filepath.Join(d, "lnd.out"),
	}}
	if err := n.launchLND(l, rpcPort, p2pPort); err != nil {
		return err
	}
	n.LNDs = append(n.LNDs, l)
	return n.writeState() // its PID, should this up be killed before the network is ready
}

// launchLND starts l's process listening on the given ports.
func (n *Network) launchLND(l *LND, rpcPort, p2pPort int) error {
	l.RPCAddr, l.P2PAddr = "127.0.0.1:"+strconv.Itoa(rpcPort), "127.0.0.1:"+strconv.Itoa(p2pPort)
	b := n.State.Btcd
	args := []string{
		"--lnddir=" + l.Dir, "--alias=" + l.Name,
		"--bitcoin.regtest", "--bitcoin.node=btcd",
		"--btcd.rpchost=" + b.RPCAddr, "--btcd.rpcuser=" + b.RPCUser, "--btcd.rpcpass=" + b.RPCPass,
		"--btcd.rpccert=" + b.RPCCert,
		"--noseedbackup", "--norest", "--nobootstrap", "--accept-keysend",
		"--rpclisten=" + l.RPCAddr, "--listen=" + l.P2PAddr,
		"--debuglevel=info", "--trickledelay=50", "--maxpendingchannels=16",
	}
	p, err := startProc(l.Name, l.Binary, args, l.LogPath)
	if err != nil {
		return err
	}
	l.proc, l.PID = p, p.pid
	return nil
}

// relaunchLND starts l again, on new ports, after it exited because one of
// its ports was taken. Its wallet and certificate stay.
func (n *Network) relaunchLND(l *LND) error {
	if l.Conn != nil {
		l.Conn.Close()
		l.Conn = nil
	}
	ports, err := freeport.Loopback(2)
	if err != nil {
		return err
	}
	n.log.Warn("LND found a port taken; starting it again on others", "name", l.Name,
		"rpc", l.RPCAddr, "p2p", l.P2PAddr, "new_rpc", ports[0], "new_p2p", ports[1])
	return n.launchLND(l, ports[0], ports[1])
}

// Height is btcd's best height.
func (n *Network) Height(ctx context.Context) (int32, error) {
	return wallet.NewRPCChain(n.Btcd).BestHeight(ctx)
}

// Mine mines blocks (to the wallet's mining address) and returns their hashes.
func (n *Network) Mine(ctx context.Context, blocks int) ([]*chainhash.Hash, error) {
	return mine(ctx, n.Btcd, blocks)
}

func mine(ctx context.Context, c *rpcclient.Client, blocks int) ([]*chainhash.Hash, error) {
	var all []*chainhash.Hash
	for blocks > 0 {
		k := min(blocks, 100)
		type res struct {
			h   []*chainhash.Hash
			err error
		}
		ch := make(chan res, 1)
		go func() { h, err := c.Generate(uint32(k)); ch <- res{h, err} }()
		select {
		case <-ctx.Done():
			return all, fmt.Errorf("regtest: mine: %w", ctx.Err())
		case r := <-ch:
			if r.err != nil {
				return all, fmt.Errorf("regtest: generate %d: %w", k, r.err)
			}
			all = append(all, r.h...)
		}
		blocks -= k
	}
	return all, nil
}

// WaitLNDsSynced waits until every LND is active and synced to btcd's tip.
func (n *Network) WaitLNDsSynced(ctx context.Context) error {
	h, err := n.Height(ctx)
	if err != nil {
		return err
	}
	errs := make([]error, len(n.LNDs))
	relaunched := make([]bool, len(n.LNDs))
	var wg sync.WaitGroup
	for i, l := range n.LNDs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for attempt := 1; ; attempt++ {
				err := l.waitReady(ctx, h)
				if err == nil || attempt == maxLaunches || !l.proc.bindFailed() {
					errs[i] = err
					return
				}
				if err := n.relaunchLND(l); err != nil {
					errs[i] = err
					return
				}
				relaunched[i] = true
			}
		}()
	}
	wg.Wait()
	if slices.Contains(relaunched, true) {
		errs = append(errs, n.writeState()) // the new PIDs and ports
	}
	return errors.Join(errs...)
}

// fundLNDs pays each LND fund sats in one wallet transaction, split into one
// output per channel it opens plus one, so it can fund several channels in
// the same block. Then mines a block and waits for LND to see it.
func (n *Network) fundLNDs(ctx context.Context, fund btcutil.Amount, channels []ChannelSpec) error {
	var outs []wallet.Output
	for i, l := range n.LNDs {
		k := 1
		for _, c := range channels {
			if c.From == i {
				k++
			}
		}
		for j := 0; j < k; j++ {
			a, err := l.Client.NewAddress(ctx, &lnrpc.NewAddressRequest{Type: lnrpc.AddressType_WITNESS_PUBKEY_HASH})
			if err != nil {
				return fmt.Errorf("regtest: %s new address: %w", l.Name, err)
			}
			addr, err := btcutil.DecodeAddress(a.Address, Params)
			if err != nil {
				return fmt.Errorf("regtest: %s address %q: %w", l.Name, a.Address, err)
			}
			outs = append(outs, wallet.PayTo(addr, fund/btcutil.Amount(k)))
		}
	}
	if _, err := n.Wallet.Send(ctx, outs...); err != nil {
		return err
	}
	if _, err := n.Mine(ctx, 1); err != nil {
		return err
	}
	if err := n.WaitLNDsSynced(ctx); err != nil {
		return err
	}
	for _, l := range n.LNDs {
		if err := waitFor(ctx, l.Name+" confirmed balance", func() (bool, string, error) {
			b, err := l.Client.WalletBalance(ctx, &lnrpc.WalletBalanceRequest{})
			if err != nil {
				return false, "", err
			}
			return b.ConfirmedBalance > 0, fmt.Sprintf("confirmed %d", b.ConfirmedBalance), nil
		}); err != nil {
			return err
		}
	}
	return nil
}

func (n *Network) openChannels(ctx context.Context, channels []ChannelSpec) error {
	if len(channels) == 0 {
		return nil
	}
	for _, c := range channels {
		if err := n.Connect(ctx, c.From, c.To); err != nil {
			return err
		}
	}
	for _, c := range channels {
		from, to := n.LNDs[c.From], n.LNDs[c.To]
		pk, err := hexPubkey(to.Pubkey)
		if err != nil {
			return err
		}
		if _, err := from.Client.OpenChannelSync(ctx, &lnrpc.OpenChannelRequest{
			NodePubkey: pk, LocalFundingAmount: int64(c.Capacity), PushSat: int64(c.Push),
		}); err != nil {
			return fmt.Errorf("regtest: open channel %s→%s: %w", from.Name, to.Name, err)
		}
	}
	if _, err := n.Mine(ctx, ChannelConfs); err != nil {
		return err
	}
	if err := n.WaitLNDsSynced(ctx); err != nil {
		return err
	}
	want := make([]int, len(n.LNDs))
	for _, c := range channels {
		want[c.From]++
		want[c.To]++
	}
	for i, l := range n.LNDs {
		if err := waitFor(ctx, l.Name+" active channels", func() (bool, string, error) {
			r, err := l.Client.ListChannels(ctx, &lnrpc.ListChannelsRequest{ActiveOnly: true})
			if err != nil {
				return false, "", err
			}
			return len(r.Channels) >= want[i], fmt.Sprintf("%d of %d", len(r.Channels), want[i]), nil
		}); err != nil {
			return err
		}
	}
	// "Active" channels may still have zero usable bandwidth for a moment
	// (the link is not yet eligible to forward): wait until the opener can
	// route a payment over each channel.
	for _, c := range channels {
		from, to := n.LNDs[c.From], n.LNDs[c.To]
		if err := waitFor(ctx, from.Name+" route to "+to.Name, func() (bool, string, error) {
			r, err := from.Client.QueryRoutes(ctx, &lnrpc.QueryRoutesRequest{PubKey: to.Pubkey, Amt: 1000})
			if err != nil {
				return false, "", err
			}
			return len(r.Routes) > 0, "no route", nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// Connect makes LND from a peer of LND to (no-op if already connected).
func (n *Network) Connect(ctx context.Context, from, to int) error {
	a, b := n.LNDs[from], n.LNDs[to]
	peers, err := a.Client.ListPeers(ctx, &lnrpc.ListPeersRequest{})
	if err != nil {
		return fmt.Errorf("regtest: %s list peers: %w", a.Name, err)
	}
	for _, p := range peers.Peers {
		if p.PubKey == b.Pubkey {
			return nil
		}
	}
	_, err = a.Client.ConnectPeer(ctx, &lnrpc.ConnectPeerRequest{
		Addr: &lnrpc.LightningAddress{Pubkey: b.Pubkey, Host: b.P2PAddr}, Timeout: 30,
	})
	if err != nil {
		return fmt.Errorf("regtest: connect %s→%s: %w", a.Name, b.Name, err)
	}
	return waitFor(ctx, a.Name+" peer "+b.Name, func() (bool, string, error) {
		peers, err := a.Client.ListPeers(ctx, &lnrpc.ListPeersRequest{})
		if err != nil {
			return false, "", err
		}
		for _, p := range peers.Peers {
			if p.PubKey == b.Pubkey {
				return true, "", nil
			}
		}
		return false, fmt.Sprintf("%d peers", len(peers.Peers)), nil
	})
}

// waitFor polls cond every 100 ms until it holds, fails, or ctx ends.
func waitFor(ctx context.Context, what string, cond func() (bool, string, error)) error {
	var last string
	for {
		ok, detail, err := cond()
		if err != nil {
			last = err.Error()
		} else if ok {
			return nil
		} else {
			last = detail
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("regtest: waiting for %s (%s): %w", what, last, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// DumpLogs writes the tail of each process's log through logf.
func (n *Network) DumpLogs(logf func(string, ...any), lines int) {
	for _, nd := range n.Nodes {
		if nd.LogPath != "" {
			logf("==== %s log tail (%s) ====\n%s", "node pid "+strconv.Itoa(nd.PID), nd.LogPath, logTail(nd.LogPath, lines))
		}
	}
	for _, l := range n.LNDs {
		logf("==== %s log tail (%s) ====\n%s", l.Name, l.LogPath, logTail(l.LogPath, lines))
	}
	if n.State.Btcd.LogPath != "" {
		logf("==== btcd log tail (%s) ====\n%s", n.State.Btcd.LogPath, logTail(n.State.Btcd.LogPath, lines))
	}
}

// Close stops nodes, then the LNDs, then btcd (by PID: SIGTERM, then
// SIGKILL after a grace period), closes the clients and removes the state
// file. Data and logs stay in Dir.
func (n *Network) Close(ctx context.Context) error {
	n.closeOnce.Do(func() {
		n.Detach()
		n.refreshState()
		n.closeErr = StopState(ctx, &n.State)
		n.log.Info("regtest network stopped", "dir", n.Dir)
	})
	return n.closeErr
}

// watchChildren logs, until ctx ends, any child that exits on its own.
func (n *Network) watchChildren(ctx context.Context) {
	procs := []*proc{n.btcd}
	for _, l := range n.LNDs {
		procs = append(procs, l.proc)
	}
	for _, p := range procs {
		if p == nil {
			continue
		}
		go func() {
			select {
			case <-ctx.Done():
			case <-p.exited:
				if ctx.Err() == nil {
					n.log.Error("child process exited unexpectedly", "name", p.name, "pid", p.pid, "log", p.logPath)
				}
			}
		}()
	}
}

// Detach closes the Go clients and leaves the processes running (for
// `up --detach`).
func (n *Network) Detach() {
	for _, l := range n.LNDs {
		if l.Conn != nil {
			l.Conn.Close()
		}
	}
	if n.Btcd != nil {
		n.Btcd.Shutdown()
	}
}

func hexPubkey(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 33 {
		return nil, fmt.Errorf("regtest: bad node pubkey %q", s)
	}
	return b, nil
}
