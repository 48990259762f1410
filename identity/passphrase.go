package identity

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/term"
)

// DefaultPassphraseEnv is the environment variable read for automation.
const DefaultPassphraseEnv = "ANCHORCHAT_PASSPHRASE"

// ErrNoPassphrase: no source could provide a passphrase.
var ErrNoPassphrase = errors.New("identity: no passphrase available")

// PassphraseOptions says where a passphrase may come from. The sources are
// tried in this order, and giving two explicit ones (File and a set
// environment variable) is an error rather than a silent choice:
//
//  1. File (--passphrase-file): the file's content, one trailing newline
//     removed. A warning is logged if the file is readable by group/others.
//  2. Env (default ANCHORCHAT_PASSPHRASE), when set and non-empty.
//  3. A no-echo prompt on the terminal, when stdin is a terminal and
//     NoPrompt is false. With Confirm, the passphrase is asked twice.
type PassphraseOptions struct {
	File     string
	Env      string // name of the variable; "" means DefaultPassphraseEnv; "-" disables it
	NoPrompt bool
	Prompt   string // e.g. "Passphrase for identity: "
	Confirm  bool   // ask twice (new passphrases)

	// For tests and embedding; nil means the real process values.
	LookupEnv func(string) (string, bool)
	TTY       *os.File  // default os.Stdin
	Out       io.Writer // where prompts go; default os.Stderr
	// ReadSecret reads one line without echo; default term.ReadPassword
	// on TTY. Tests inject it.
	ReadSecret func(ctx context.Context) (string, error)
	IsTerminal func() bool
	Logger     *slog.Logger
}

// ReadPassphrase obtains a passphrase from the first applicable source in
// opts (see PassphraseOptions) and returns it with the name of the source
// ("file", "env", "prompt"), for logging. It never logs the passphrase.
func ReadPassphrase(ctx context.Context, opts PassphraseOptions) (pass, source string, err error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	envName := opts.Env
	if envName == "" {
		envName = DefaultPassphraseEnv
	}
	lookup := opts.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	envVal, envSet := "", false
	if envName != "-" {
		envVal, envSet = lookup(envName)
		envSet = envSet && envVal != ""
	}

	if opts.File != "" {
		if envSet {
			return "", "", fmt.Errorf("identity: both --passphrase-file and $%s are set; use one", envName)
		}
		p, err := readPassphraseFile(opts.File, log)
		return p, "file", err
	}
	if envSet {
		log.Debug("passphrase taken from environment", "var", envName)
		return envVal, "env", nil
	}
	if opts.NoPrompt {
		return "", "", fmt.Errorf("%w: no --passphrase-file, $%s unset, and prompting is disabled", ErrNoPassphrase, envName)
	}
	tty := opts.TTY
	if tty == nil {
		tty = os.Stdin
	}
	isTerm := opts.IsTerminal
	if isTerm == nil {
		isTerm = func() bool { return term.IsTerminal(int(tty.Fd())) }
	}
	if !isTerm() {
		return "", "", fmt.Errorf("%w: stdin is not a terminal; use --passphrase-file or $%s", ErrNoPassphrase, envName)
	}
	out := opts.Out
	if out == nil {
		out = os.Stderr
	}
	read := opts.ReadSecret
	if read == nil {
		read = func(ctx context.Context) (string, error) { return readNoEcho(ctx, tty) }
	}
	prompt := opts.Prompt
	if prompt == "" {
		prompt = "Passphrase: "
	}
	fmt.Fprint(out, prompt)
	p, err := read(ctx)
	fmt.Fprintln(out)
	if err != nil {
		return "", "", fmt.Errorf("identity: read passphrase: %w", err)
	}
	if opts.Confirm {
		fmt.Fprint(out, "Repeat passphrase: ")
		p2, err := read(ctx)
		fmt.Fprintln(out)
		if err != nil {
			return "", "", fmt.Errorf("identity: read passphrase: %w", err)
		}
		if p2 != p {
			return "", "", errors.New("identity: the two passphrases differ")
		}
	}
	if p == "" {
		return "", "", fmt.Errorf("%w: empty passphrase entered", ErrNoPassphrase)
	}
	return p, "prompt", nil
}

func readPassphraseFile(path string, log *slog.Logger) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("identity: passphrase file: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil {
		if !st.Mode().IsRegular() && st.Mode()&os.ModeNamedPipe == 0 {
			return "", fmt.Errorf("identity: passphrase file %s is not a regular file", path)
		}
		if st.Mode().IsRegular() && st.Mode().Perm()&0o077 != 0 {
			log.Warn("passphrase file is readable by others; run chmod 600", "path", path)
		}
	}
	// One byte more than the longest accepted passphrase and its line end,
	// so that a longer file is refused rather than cut.
	b, err := io.ReadAll(io.LimitReader(f, 4*MaxPassphraseLen+3))
	if err != nil {
		return "", fmt.Errorf("identity: read passphrase file: %w", err)
	}
	p := string(b)
	p = strings.TrimSuffix(p, "\n")
	p = strings.TrimSuffix(p, "\r") // one line end, Unix or Windows (or an editor's lone CR)
	if len(p) > 4*MaxPassphraseLen {
		return "", fmt.Errorf("identity: passphrase file %s is too large", path)
	}
	if p == "" {
		return "", fmt.Errorf("%w: passphrase file %s is empty", ErrNoPassphrase, path)
	}
	return p, nil
}

// readNoEcho reads a line from the terminal with echo off. On ctx
// cancellation it restores the terminal state and returns ctx.Err(); the
// blocked read is abandoned.
func readNoEcho(ctx context.Context, tty *os.File) (string, error) {
	fd := int(tty.Fd())
	state, err := term.GetState(fd)
	if err != nil {
		return "", fmt.Errorf("get terminal state: %w", err)
	}
	type res struct {
		b   []byte
		err error
	}
	ch := make(chan res, 1)
	go func() {
		b, err := term.ReadPassword(fd)
		ch <- res{b, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return "", r.err
		}
		s := string(r.b)
		clear(r.b)
		return s, nil
	case <-ctx.Done():
		_ = term.Restore(fd, state)
		return "", ctx.Err()
	}
}
