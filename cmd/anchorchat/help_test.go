package main

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// runCLI runs the binary and returns its stdout, its stderr and whether it
// exited 0.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, ok bool) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Env = append(cmd.Environ(), "HOME="+t.TempDir()) // no node to find
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return out.String(), errb.String(), err == nil
}

// Help that was asked for is output: on stdout (anchorchat node --help |
// less), exit status 0, for every command and subcommand. A usage mistake
// is an error: on stderr, once, with a pointer to --help instead of
// the whole help, exit status non-zero; stdout stays empty for scripts.
func TestHelpOnStdoutMistakesOnStderr(t *testing.T) {
	asked := [][]string{{"--help"}, {"help"}, {"id", "--help"}, {"anchor", "--help"},
		{"id", "show", "--help"}, {"id", "revoke", "-h"}, {"anchor", "now", "--help"}, {"payments", "cancel", "--help"}}
	for name := range commands {
		asked = append(asked, []string{name, "--help"})
	}
	for _, args := range asked {
		out, errOut, ok := runCLI(t, args...)
		if !ok || !strings.Contains(strings.ToLower(out), "usage") || errOut != "" {
			t.Errorf("%q: exit 0 %v, stdout %d bytes, stderr %q; want the help on stdout and nothing on stderr", args, ok, len(out), clip(errOut))
		}
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"node", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"status", "--network"}, "flag needs an argument: -network"},
		{[]string{"send", "--wait=maybe"}, `invalid boolean value "maybe" for -wait`},
		{[]string{"id", "show", "--nsec"}, "flag provided but not defined: -nsec"},
		{[]string{"init", "--scrypt-logn", "99"}, "scrypt-logn"},
	} {
		out, errOut, ok := runCLI(t, c.args...)
		if ok || out != "" {
			t.Errorf("%q: exit 0 %v, stdout %q; want a failure and nothing on stdout", c.args, ok, out)
		}
		if strings.Count(errOut, c.want) != 1 || !strings.Contains(errOut, "--help") || strings.Contains(errOut, "Usage:") {
			t.Errorf("%q: stderr %q; want %q once and a pointer to --help, not the help itself", c.args, clip(errOut), c.want)
		}
	}

	// No command at all: the list of commands, as an error.
	out, errOut, ok := runCLI(t)
	if ok || out != "" || !strings.Contains(errOut, "Commands:") {
		t.Errorf("no command: exit 0 %v, stdout %q, stderr %q; want the usage on stderr and a failure", ok, clip(out), clip(errOut))
	}
}

// clip shortens a long output for a test's message.
func clip(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

// A client command says what is wrong with its arguments before it looks
// for a node: arguments a command does not take are refused (inbox @bob
// listed every conversation), an unknown network lists the known ones.
func TestClientCommandsCheckTheirArguments(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"status", "now"}, "status takes no arguments"},
		{[]string{"inbox", "@bob"}, "inbox takes no arguments"},
		{[]string{"wallet", "--json", "x"}, "wallet takes no arguments"},
		{[]string{"payments", "@bob"}, "payments takes no arguments"},
		{[]string{"anchor", "batches", "7"}, "anchor batches takes no arguments"},
		{[]string{"status", "--network", "moon"}, "mainnet, testnet, signet or regtest"},
		{[]string{"send", "--network", "moon", "@bob", "hi"}, "mainnet, testnet, signet or regtest"},
	} {
		out, errOut, ok := runCLI(t, c.args...)
		if ok || out != "" || !strings.Contains(errOut, c.want) || strings.Contains(errOut, "no node is running") {
			t.Errorf("%q: exit 0 %v, stdout %q, stderr %q; want an error naming %q", c.args, ok, out, errOut, c.want)
		}
	}
}

// init ends with the command that starts the node it made: with the data
// dir it used when that is not the network's default (it said only
// --network, which starts a node on another data dir).
func TestInitNamesTheNodeItMade(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(binPath, "init", "--network", "regtest", "--datadir", dir, "--scrypt-logn", "10")
	cmd.Env = append(cmd.Environ(), "ANCHORCHAT_PASSPHRASE="+testPass)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	if want := "anchorchat node --network regtest --datadir " + dir + "\n"; !strings.Contains(string(out), want) {
		t.Errorf("init says:\n%s\nwant the start command %q", out, want)
	}
}
