package regtest

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/anchorchat/anchorchat/wallet"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/rpcclient"
	"github.com/lightningnetwork/lnd/lnrpc"
)

const cliUsage = `usage: anchorchat regtest <command> [flags]

A local Bitcoin + Lightning regtest network: btcd, LND nodes, a funding
wallet, channels, and anchorchat nodes.

commands:
  up           start a network (foreground until Ctrl-C, or --detach)
  down         stop the network (LND before btcd); --wipe deletes its data
  status       show processes, heights, LND nodes and channels
  mine N       mine N blocks
  fund ADDR AMOUNT
               send AMOUNT BTC from the harness wallet to ADDR and mine a block
  build        build/cached btcd and lnd binaries only

Every command takes --dir (default $ANCHORCHAT_REGTEST_DIR or
~/.anchorchat/regtest). Run "anchorchat regtest <command> --help" for flags.
`

// Main runs `anchorchat regtest <args>` without anchorchat nodes (no
// StartNode hook): see MainWithNodes.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return MainWithNodes(ctx, args, stdout, stderr, nil)
}

// MainWithNodes runs `anchorchat regtest <args>`; startNode starts the
// anchorchat nodes of `up --nodes M` (the node daemon wires it; nil allows
// only --nodes 0). Help output goes to stdout and returns nil; a usage
// error goes to stderr.
func MainWithNodes(ctx context.Context, args []string, stdout, stderr io.Writer, startNode StartNodeFunc) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, cliUsage)
		return errors.New("regtest: missing command")
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, cliUsage)
		return nil
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c := &cli{stdout: stdout, stderr: stderr, log: log, startNode: startNode}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "up":
		return c.up(ctx, rest)
	case "down":
		return c.down(ctx, rest)
	case "status":
		return c.status(ctx, rest)
	case "mine":
		return c.mine(ctx, rest)
	case "fund":
		return c.fund(ctx, rest)
	case "build":
		return c.build(ctx, rest)
	default:
		fmt.Fprint(stderr, cliUsage)
		return fmt.Errorf("regtest: unknown command %q", cmd)
	}
}

type cli struct {
	stdout, stderr io.Writer
	log            *slog.Logger
	startNode      StartNodeFunc
}

// DefaultDir is $ANCHORCHAT_REGTEST_DIR or ~/.anchorchat/regtest.
func DefaultDir() string {
	if d := os.Getenv("ANCHORCHAT_REGTEST_DIR"); d != "" {
		return d
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".anchorchat", "regtest")
	}
	return filepath.Join(os.TempDir(), "anchorchat-regtest")
}

func (c *cli) flags(name, args, help string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("anchorchat regtest "+name, flag.ContinueOnError)
	fs.SetOutput(c.stderr) // a usage error; parse shows --help on stdout
	dir := fs.String("dir", DefaultDir(), "network directory (data, logs, state.json)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: anchorchat regtest %s [flags] %s\n\n%s\n\nflags:\n", name, args, help)
		fs.PrintDefaults()
	}
	return fs, dir
}

// wantArgs checks that fs was left exactly the arguments named in want
// (space-separated; "" for none). Flags after an argument are not parsed
// (Go's flag package stops at the first argument), and a stray argument
// may be a directory meant for --dir: both are refused, not ignored.
func wantArgs(fs *flag.FlagSet, cmd, want string) error {
	names := strings.Fields(want)
	if fs.NArg() == len(names) {
		return nil
	}
	for _, a := range fs.Args() {
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			return fmt.Errorf("regtest %s: flags go before the arguments: anchorchat regtest %s [flags] %s (got %q)", cmd, cmd, want, fs.Args())
		}
	}
	if len(names) == 0 {
		return fmt.Errorf("regtest %s: unexpected arguments %q (the network's directory is given with --dir DIR)", cmd, fs.Args())
	}
	fs.Usage()
	return fmt.Errorf("regtest %s: want %s, got %q", cmd, want, fs.Args())
}

// parse returns done=true (and nil) after --help, whose text goes to
// stdout; a flag error and the usage go to stderr.
func (c *cli) parse(fs *flag.FlagSet, args []string) (bool, error) {
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	err := fs.Parse(args)
	fs.SetOutput(c.stderr)
	if errors.Is(err, flag.ErrHelp) {
		_, _ = buf.WriteTo(c.stdout)
		return true, nil
	}
	_, _ = buf.WriteTo(c.stderr)
	if err != nil {
		return false, fmt.Errorf("regtest: %w", err)
	}
	return false, nil
}

func (c *cli) up(ctx context.Context, args []string) error {
	fs, dir := c.flags("up", "", `Starts btcd (regtest, own TLS pair, mining to the harness wallet), mines past
block 432, starts the LND nodes, funds them, connects them, opens channels and
starts the anchorchat nodes; then prints how to reach everything.

Without --detach it stays in the foreground and stops everything (LND before
btcd) at Ctrl-C, SIGTERM or SIGHUP (its terminal closed); data and logs stay
in --dir. With --detach it
exits and leaves the network running: stop it with "anchorchat regtest down".
Refuses to start if a live network already uses --dir; a state file left by
a dead run is cleaned up.`)
	nLND := fs.Int("lnd", 2, "number of LND nodes")
	defNodes := 0
	if c.startNode != nil {
		defNodes = 2
	}
	nodes := fs.Int("nodes", defNodes, "number of anchorchat nodes (alice, bob, …)")
	both := fs.Bool("both", false, "open each default channel in both directions")
	noChan := fs.Bool("no-channels", false, "open no channels")
	fundBTC := fs.Float64("fund", 10, "BTC sent to each LND")
	chanSats := fs.Int64("channel-sats", 5_000_000, "capacity of each channel in sat")
	detach := fs.Bool("detach", false, "leave the network running in the background and exit")
	if done, err := c.parse(fs, args); done || err != nil {
		return err
	}
	if err := wantArgs(fs, "up", ""); err != nil {
		return err
	}
	if *nodes < 0 {
		return fmt.Errorf("regtest up: --nodes %d: want 0 or more", *nodes)
	}
	if *nLND < 0 {
		return fmt.Errorf("regtest up: --lnd %d: want 0 or more", *nLND)
	}
	lnds := *nLND
	if lnds == 0 {
		lnds = -1
	}
	// Options take 0 for the defaults: a 0 here must not mean 10 BTC or 5M sat.
	fund, err := btcutil.NewAmount(*fundBTC)
	if err != nil || fund <= 0 {
		return fmt.Errorf("regtest up: --fund %v: want a positive amount of BTC", *fundBTC)
	}
	if *chanSats <= 0 || *chanSats > maxChannelSats {
		return fmt.Errorf("regtest up: --channel-sats %d: want 1 to %d (LND's largest channel without --protocol.wumbo-channels)", *chanSats, maxChannelSats)
	}
	if !*noChan && *nLND > 1 && btcutil.Amount(*chanSats) >= fund {
		return fmt.Errorf("regtest up: --fund %v is not enough for channels of --channel-sats %d sat and their fees", fund, *chanSats)
	}
	opts := Options{
		Dir: *dir, LNDs: lnds, FundSats: fund, BothDirections: *both, NoChannels: *noChan,
		ChannelSats: btcutil.Amount(*chanSats), Nodes: *nodes, StartNode: c.startNode, Logger: c.log,
	}
	// SIGHUP: the terminal of a foreground up closed. The children, in
	// sessions of their own, would outlive an up killed by it. A signal
	// ignored when up started (nohup, a background job) stays ignored:
	// Notify would undo that.
	sigs := []os.Signal{syscall.SIGTERM}
	for _, s := range []os.Signal{os.Interrupt, syscall.SIGHUP} {
		if !signal.Ignored(s) {
			sigs = append(sigs, s)
		}
	}
	sigCtx, stop := signal.NotifyContext(ctx, sigs...)
	defer stop()
	start := time.Now()
	n, err := Up(sigCtx, opts)
	if err != nil {
		if n != nil {
			n.DumpLogs(func(f string, a ...any) { fmt.Fprintf(c.stderr, f+"\n", a...) }, 30)
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if cerr := n.Close(sctx); cerr != nil {
				c.log.Error("stopping after failed up", "err", cerr)
			}
		}
		return err
	}
	fmt.Fprintf(c.stdout, "regtest network up in %s\n\n", time.Since(start).Round(time.Millisecond))
	PrintState(c.stdout, &n.State)
	if *detach {
		n.Detach()
		fmt.Fprintf(c.stdout, "\ndetached; stop with: anchorchat regtest down --dir %s\n", n.Dir)
		return nil
	}
	n.State.SupervisorPID, n.State.SupervisorBinary = os.Getpid(), supervisorBinary()
	if err := n.writeState(); err != nil {
		c.log.Warn("could not record supervisor pid", "err", err)
	}
	n.watchChildren(sigCtx)
	fmt.Fprintf(c.stdout, "\nrunning in the foreground; Ctrl-C stops it (or: anchorchat regtest down --dir %s)\n", n.Dir)
	<-sigCtx.Done()
	c.log.Info("stopping regtest network")
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return n.Close(sctx)
}

// maxChannelSats is LND's largest channel without wumbo channels.
const maxChannelSats = 1<<24 - 1

// PrintState prints how to reach everything in s.
func PrintState(w io.Writer, s *State) {
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintf(tw, "state file\t%s\n", StatePath(s.Dir))
	fmt.Fprintf(tw, "btcd\tpid %d\trpc %s\tp2p %s\tcert %s\tlog %s\n", s.Btcd.PID, s.Btcd.RPCAddr, s.Btcd.P2PAddr, s.Btcd.RPCCert, s.Btcd.LogPath)
	for _, l := range s.LNDs {
		fmt.Fprintf(tw, "%s\tpid %d\trpc %s\tp2p %s\tpubkey %s\tlog %s\n", l.Name, l.PID, l.RPCAddr, l.P2PAddr, l.Pubkey, l.LogPath)
	}
	for _, nd := range s.Nodes {
		fmt.Fprintf(tw, "%s\tpid %d\turl %s\tlog %s\n", nd.Name, nd.PID, nd.URL, nd.LogPath)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nbtcctl:\n  %s --regtest --rpcserver=%s --rpcuser=%s --rpcpass=%s --rpccert=%s getblockcount\n",
		s.Btcctl, s.Btcd.RPCAddr, s.Btcd.RPCUser, s.Btcd.RPCPass, s.Btcd.RPCCert)
	if len(s.LNDs) > 0 {
		fmt.Fprintln(w, "lncli:")
		for _, l := range s.LNDs {
			fmt.Fprintf(w, "  %s %s getinfo\n", s.Lncli, strings.Join(l.lncliArgs(), " "))
		}
	}
	for _, nd := range s.Nodes {
		for _, k := range sortedKeys(nd.Info) {
			fmt.Fprintf(w, "%s %s: %s\n", nd.Name, k, nd.Info[k])
		}
	}
	fmt.Fprintf(w, "wallet: %s (password %q, regtest only)\n", s.Wallet.Path, s.Wallet.Password)
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func (c *cli) down(ctx context.Context, args []string) error {
	fs, dir := c.flags("down", "", `Stops the network in --dir by PID: a foreground "up" first (which stops its
children), then anchorchat nodes, LNDs, btcd (SIGTERM, SIGKILL after a grace
period). Works when some processes already died. Data and logs stay unless
--wipe.`)
	wipe := fs.Bool("wipe", false, "after stopping, delete what up made in --dir (btcd, lnd-*, wallet, nodes, state.json),\nand --dir itself if nothing else is left (other files, such as a regtest node's own, are kept)")
	if done, err := c.parse(fs, args); done || err != nil {
		return err
	}
	if err := wantArgs(fs, "down", ""); err != nil {
		return err
	}
	st, err := ReadState(*dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		fmt.Fprintf(c.stdout, "no regtest network in %s\n", *dir)
	case err != nil:
		return err
	default:
		for _, p := range st.Processes() {
			state := "running, stopping"
			if !p.Alive {
				state = "not running"
			}
			fmt.Fprintf(c.stdout, "%-10s pid %-7d %s\n", p.Name, p.PID, state)
		}
		if err := StopState(ctx, st); err != nil {
			return err
		}
		fmt.Fprintln(c.stdout, "stopped")
	}
	if *wipe {
		gone, err := wipeNetwork(*dir)
		if err != nil {
			return fmt.Errorf("regtest down: wipe: %w", err)
		}
		if gone {
			fmt.Fprintf(c.stdout, "wiped %s\n", *dir)
		} else {
			fmt.Fprintf(c.stdout, "wiped the network in %s; other files there are kept\n", *dir)
		}
	}
	return nil
}

// wipeNetwork removes what `up` made in dir, and dir itself if nothing
// else is left (gone). Anything else stays: the default dir is also the
// default data dir of `anchorchat node --network regtest`, whose identity
// and databases are not the harness's to delete.
func wipeNetwork(dir string) (gone bool, err error) {
	entries := []string{"btcd", "wallet", "nodes", StateFileName}
	lnds, _ := filepath.Glob(filepath.Join(dir, "lnd-*"))
	for _, l := range lnds {
		entries = append(entries, filepath.Base(l))
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e)); err != nil {
			return false, err
		}
	}
	if left, _ := os.ReadDir(dir); len(left) > 0 {
		return false, nil
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	return true, nil
}

func (c *cli) loadLive(dir string) (*State, error) {
	st, err := ReadState(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("regtest: no network in %s (start one with `anchorchat regtest up`)", dir)
	}
	if err != nil {
		return nil, err
	}
	if !pidAlive(st.Btcd.PID, st.Btcd.Binary) {
		return nil, fmt.Errorf("regtest: btcd (pid %d) of the network in %s is not running; run `anchorchat regtest down --dir %s`", st.Btcd.PID, dir, dir)
	}
	return st, nil
}

func (c *cli) status(ctx context.Context, args []string) error {
	fs, dir := c.flags("status", "", "Shows the network's processes, block height, LND nodes and channels.")
	if done, err := c.parse(fs, args); done || err != nil {
		return err
	}
	if err := wantArgs(fs, "status", ""); err != nil {
		return err
	}
	st, err := ReadState(*dir)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(c.stdout, "no regtest network in %s\n", *dir)
		return nil
	}
	if err != nil {
		return err
	}
	dead := 0
	for _, p := range st.Processes() {
		s := "running"
		if !p.Alive {
			s = "NOT RUNNING"
			dead++
		}
		fmt.Fprintf(c.stdout, "%-10s pid %-7d %s\n", p.Name, p.PID, s)
	}
	if dead > 0 {
		fmt.Fprintf(c.stdout, "\n%d process(es) not running: `anchorchat regtest down --dir %s` cleans up\n", dead, *dir)
	}
	if pidAlive(st.Btcd.PID, st.Btcd.Binary) {
		if bc, err := DialBtcd(st.Btcd); err == nil {
			if h, err := wallet.NewRPCChain(bc).BestHeight(ctx); err == nil {
				fmt.Fprintf(c.stdout, "\nblock height %d\n", h)
			}
			bc.Shutdown()
		}
	}
	for _, l := range st.LNDs {
		if !pidAlive(l.PID, l.Binary) {
			continue
		}
		conn, err := DialLND(ctx, l.RPCAddr, l.TLSCertPath, l.MacaroonPath)
		if err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		cl := lnrpc.NewLightningClient(conn)
		if info, err := cl.GetInfo(cctx, &lnrpc.GetInfoRequest{}); err == nil {
			fmt.Fprintf(c.stdout, "%s: synced=%v height %d active channels %d peers %d\n",
				l.Name, info.SyncedToChain, info.BlockHeight, info.NumActiveChannels, info.NumPeers)
		}
		cancel()
		conn.Close()
	}
	fmt.Fprintln(c.stdout)
	PrintState(c.stdout, st)
	return nil
}

func (c *cli) mine(ctx context.Context, args []string) error {
	fs, dir := c.flags("mine", "N", "Mines N blocks (coinbase to the harness wallet).")
	if done, err := c.parse(fs, args); done || err != nil {
		return err
	}
	if err := wantArgs(fs, "mine", "N"); err != nil {
		return err
	}
	k, err := strconv.Atoi(fs.Arg(0))
	if err != nil || k <= 0 {
		return fmt.Errorf("regtest mine: N must be a positive integer, got %q", fs.Arg(0))
	}
	_, bc, err := c.liveBtcd(*dir)
	if err != nil {
		return err
	}
	defer bc.Shutdown()
	hashes, err := mine(ctx, bc, k)
	if err != nil {
		return err
	}
	h, err := wallet.NewRPCChain(bc).BestHeight(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "mined %d blocks, height %d, last %s\n", len(hashes), h, hashes[len(hashes)-1])
	return nil
}

// liveBtcd loads the state of the live network in dir and dials its btcd.
func (c *cli) liveBtcd(dir string) (*State, *rpcclient.Client, error) {
	st, err := c.loadLive(dir)
	if err != nil {
		return nil, nil, err
	}
	bc, err := DialBtcd(st.Btcd)
	if err != nil {
		return nil, nil, err
	}
	return st, bc, nil
}

func (c *cli) fund(ctx context.Context, args []string) error {
	fs, dir := c.flags("fund", "ADDR AMOUNT", "Sends AMOUNT BTC (e.g. 0.5) from the harness wallet to ADDR, then mines a block.")
	noMine := fs.Bool("no-mine", false, "leave the transaction unconfirmed")
	if done, err := c.parse(fs, args); done || err != nil {
		return err
	}
	if err := wantArgs(fs, "fund", "ADDR AMOUNT"); err != nil {
		return err
	}
	addr, err := btcutil.DecodeAddress(fs.Arg(0), Params)
	if err != nil || !addr.IsForNet(Params) {
		return fmt.Errorf("regtest fund: %q is not a regtest address: %v", fs.Arg(0), err)
	}
	btc, err := strconv.ParseFloat(fs.Arg(1), 64)
	if err != nil {
		return fmt.Errorf("regtest fund: amount %q: %w", fs.Arg(1), err)
	}
	amt, err := btcutil.NewAmount(btc)
	if err != nil {
		return fmt.Errorf("regtest fund: amount: %w", err)
	}
	st, bc, err := c.liveBtcd(*dir)
	if err != nil {
		return err
	}
	defer bc.Shutdown()
	w, err := wallet.Open(st.Wallet.Path, []byte(st.Wallet.Password), wallet.Config{Params: Params, Chain: wallet.NewRPCChain(bc), Logger: c.log})
	if err != nil {
		return err
	}
	tx, err := w.Send(ctx, wallet.PayTo(addr, amt))
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "sent %v to %s in %s\n", amt, addr, tx.TxHash())
	if !*noMine {
		hashes, err := mine(ctx, bc, 1)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "mined %s\n", hashes[0])
	}
	return nil
}

func (c *cli) build(ctx context.Context, args []string) error {
	fs, _ := c.flags("build", "", `Builds btcd `+BtcdVersion+` and lnd `+LndVersion+` into the cache
($ANCHORCHAT_CACHE or the user cache dir + /anchorchat), if not cached.`)
	if done, err := c.parse(fs, args); done || err != nil {
		return err
	}
	if err := wantArgs(fs, "build", ""); err != nil {
		return err
	}
	b, err := EnsureBinaries(ctx, c.log)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "btcd   %s\nbtcctl %s\nlnd    %s\nlncli  %s\n", b.Btcd, b.Btcctl, b.Lnd, b.Lncli)
	return nil
}
