package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/anchorchat/anchorchat/internal/node"
	"github.com/anchorchat/anchorchat/internal/timerslack"
)

func init() {
	register(&command{name: "node", summary: "run the node: personal relay, local API, metrics", run: runNode})
	register(&command{name: "status", summary: "show a running node's status", run: runStatus})
	register(&command{name: "version", summary: "print the version", run: func(_ context.Context, args []string, stdout, _ io.Writer) error {
		if err := newFlagSet("version", "version", "Prints the version of this anchorchat binary.", stdout).Parse(args); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "anchorchat", node.Version)
		return nil
	}})
}

const nodeHelp = `
Runs the anchorchat node in the foreground until SIGINT or SIGTERM, then shuts
down cleanly (stops accepting, flushes writes, closes the database).

Every flag can also be set in the config file (<datadir>/anchorchat.conf, lines
of "name = value", e.g. "relay.open = true") or in the environment
(ANCHORCHAT_ and the flag name in capitals with dots and dashes as underscores,
e.g. ANCHORCHAT_LOG_LEVEL=debug). A flag beats the environment, which beats the
file. A list setting (dm-relays, publish-relays, relay.allow, ...) takes
comma-separated values and may be repeated, as a flag or in the file; any
other setting may appear once in the file. Only network, datadir and config
are not read from the file: they choose it, so they come from flags or the
environment.

The relay answers websocket clients, the NIP-11 document (Accept:
application/nostr+json) and /metrics on --listen. The local API for the other
commands listens on --api.listen, authenticated by the token in
<datadir>/api.token (mode 0600).

On Linux the process runs with a timer slack of 500us (timers may fire that
much late, so the Go runtime's monitor thread wakes less often; see
docs/architecture.md). ANCHORCHAT_TIMER_SLACK, read before anything else and
so not a flag, sets another: e.g. 1ms, 50us, or 0 to keep the inherited one.`

func runNode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("node", "node [flags]", nodeHelp, stdout)
	cfg, err := node.Load(fs.FlagSet, args, os.Getenv)
	if err != nil {
		return fs.usageError(err)
	}
	log := cfg.NewLogger(os.Stderr)
	slack, how, _ := timerslack.Status() // main refused a bad ANCHORCHAT_TIMER_SLACK
	log.Info("timer slack", "slack", slack, "set", how)
	return node.Run(ctx, cfg, log)
}

// clientFlags are the flags a client command needs to find its node.
func clientFlags(fs *flag.FlagSet) (network, datadir *string) {
	network = fs.String("network", envOr("ANCHORCHAT_NETWORK", "mainnet"), "network of the node: mainnet, testnet, signet or regtest (or ANCHORCHAT_NETWORK)")
	datadir = fs.String("datadir", os.Getenv("ANCHORCHAT_DATADIR"), "data dir of the node (default ~/.anchorchat/<network>; or ANCHORCHAT_DATADIR)")
	return
}

// clientCommand is a command that talks to a running node: its flag set
// carries --network and --datadir, and dial parses the arguments and finds
// the node.
type clientCommand struct {
	*flagSet
	network, datadir *string
}

func newClientCommand(name, synopsis, description string, stdout io.Writer) clientCommand {
	fs := newFlagSet(name, synopsis, description, stdout)
	network, datadir := clientFlags(fs.FlagSet)
	return clientCommand{fs, network, datadir}
}

// dial parses args, has check (if not nil) look at the arguments left after
// the flags, and only then finds the node: a command given the wrong
// arguments says so even when no node is running.
func (c clientCommand) dial(args []string, check func(rest []string) error) (*node.Client, error) {
	if err := c.Parse(args); err != nil {
		return nil, err
	}
	if check != nil {
		if err := check(c.Args()); err != nil {
			return nil, err
		}
	}
	return dialNode(*c.network, *c.datadir)
}

// dialNoArgs is dial for a command that takes flags only.
func (c clientCommand) dialNoArgs(args []string) (*node.Client, error) {
	return c.dial(args, func(rest []string) error {
		if len(rest) > 0 {
			return fmt.Errorf("%s takes no arguments, only flags (got %q; see `anchorchat %s --help`)", c.name, rest, c.name)
		}
		return nil
	})
}

// nArgs is a check for dial: exactly n arguments, or msg.
func nArgs(n int, msg string) func([]string) error {
	return func(rest []string) error {
		if len(rest) != n {
			return errors.New(msg)
		}
		return nil
	}
}

// printJSON writes v indented.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func dialNode(network, datadir string) (*node.Client, error) {
	if _, ok := node.Networks[network]; !ok {
		return nil, fmt.Errorf("unknown network %q: use mainnet, testnet, signet or regtest", network)
	}
	if datadir == "" {
		datadir = node.DefaultDataDir(network)
	}
	return node.Dial(datadir)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := newClientCommand("status", "status [--network N] [--datadir DIR] [--json]", "Shows a running node's status through its local API.", stdout)
	asJSON := cmd.Bool("json", false, "print JSON")
	c, err := cmd.dialNoArgs(args)
	if err != nil {
		return err
	}
	st, err := c.Status(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, st)
	}
	owner := st.Owner
	if owner == "" {
		owner = "(none: the relay refuses events until an owner is set)"
	}
	fmt.Fprintf(stdout, "anchorchat %s on %s (pid %d, up %s)\nrelay:  %s (open: %v)\nowner:  %s\n",
		st.Version, st.Network, st.PID, st.Uptime, st.RelayURL, st.Open, owner)
	if st.Npub != "" {
		handle := st.Handle
		if st.HandleState != "" {
			handle += " (" + st.HandleState + ")"
		}
		fmt.Fprintf(stdout, "npub:   %s\nhandle: %s\n", st.Npub, handle)
	}
	if st.LND != "" {
		fmt.Fprintf(stdout, "lnd:    %s %s\n", st.LND, st.LNDState)
	}
	fmt.Fprintf(stdout, "events: %d\n", st.Events)
	return nil
}
