// Command anchorchat is the anchorchat node and its command-line client.
//
// `anchorchat node` runs the daemon; the other subcommands talk to a running
// node over its local API, the way lncli talks to lnd.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/anchorchat/anchorchat/internal/timerslack"
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

func main() {
	// SIGINT ignored at start (a background job of a script, nohup) stays
	// ignored, as the shell meant; Notify would undo that.
	sigs := []os.Signal{syscall.SIGTERM}
	if !signal.Ignored(os.Interrupt) {
		sigs = append(sigs, os.Interrupt)
	}
	ctx, stop := notifyContext(sigs...)
	defer stop()
	// Set (or not) before main ran; a value that was not understood is
	// refused here, for every command (regtest's btcd and LND inherit it).
	_, _, err := timerslack.Status()
	if err == nil {
		err = run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	}
	var sig stopSignal
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.As(context.Cause(ctx), &sig) && errors.Is(err, context.Canceled):
		fmt.Fprintln(os.Stderr, "anchorchat: interrupted")
		os.Exit(128 + int(sig.Signal)) // as a shell reports a process the signal killed: 130, 143
	default:
		fmt.Fprintln(os.Stderr, "anchorchat:", err)
		os.Exit(1)
	}
}

// stopSignal is the cause of notifyContext's cancellation.
type stopSignal struct{ syscall.Signal }

func (s stopSignal) Error() string { return s.String() + " signal received" }

// notifyContext is signal.NotifyContext with a cause that keeps the signal
// itself, so the exit status can say which one stopped the command.
func notifyContext(sigs ...os.Signal) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sigs...)
	go func() {
		select {
		case s := <-ch:
			cancel(stopSignal{s.(syscall.Signal)})
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		cancel(context.Canceled)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return errors.New("missing a command")
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "-help" || args[0] == "help" {
		if len(args) > 1 && args[0] == "help" && commands[args[1]] != nil { // help CMD is CMD --help
			return commands[args[1]].run(ctx, []string{"--help"}, stdout, stderr)
		}
		usage(stdout)
		return nil
	}
	c, ok := commands[args[0]]
	if !ok {
		usage(stderr)
		return fmt.Errorf("unknown command %q", args[0])
	}
	return c.run(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `anchorchat: a self-hosted chat node — your keys, your relay, Nostr messages,
handles anchored on Bitcoin, Lightning tips.

Usage: anchorchat <command> [flags]

Commands:
`)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprint(w, "\nRun `anchorchat <command> --help` for a command's flags.\n")
}

// flagSet is a subcommand's flag set. Its help, when asked for (-h,
// --help), goes to stdout; a mistake in the arguments comes back from Parse
// as an error, printed once by main with a pointer to --help, instead of
// the flag package's message followed by the whole help on stderr.
type flagSet struct {
	*flag.FlagSet
	name   string
	failed bool // the flag package reported a mistake (through Output)
}

// newFlagSet makes a subcommand's flag set, with --help explaining it.
func newFlagSet(name, synopsis, description string, stdout io.Writer) *flagSet {
	f := &flagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), name: name}
	// The flag package writes to Output only a mistake's message, just
	// before it calls Usage, and Usage's own text.
	f.SetOutput(failedWriter{&f.failed})
	f.Usage = func() {
		if f.failed {
			return // Parse returns the mistake, main prints it
		}
		fmt.Fprintf(stdout, "Usage: anchorchat %s\n\n%s\n", synopsis, strings.TrimSpace(description))
		n := 0
		f.VisitAll(func(*flag.Flag) { n++ })
		if n == 0 {
			return
		}
		fmt.Fprint(stdout, "\nFlags:\n")
		f.SetOutput(stdout)
		f.PrintDefaults()
		f.SetOutput(failedWriter{&f.failed})
	}
	return f
}

// Parse parses args; a mistake in them comes back pointing at --help.
func (f *flagSet) Parse(args []string) error {
	return f.usageError(f.FlagSet.Parse(args))
}

// usageError adds a pointer to --help to an error of the flag package.
func (f *flagSet) usageError(err error) error {
	if err == nil || !f.failed {
		return err
	}
	f.failed = false
	return fmt.Errorf("%w (see `anchorchat %s --help`)", err, f.name)
}

// failedWriter notes that the flag package reported a mistake, and drops
// its message: the error Parse returns says the same.
type failedWriter struct{ failed *bool }

func (w failedWriter) Write(b []byte) (int, error) {
	*w.failed = true
	return len(b), nil
}
