package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/anchorchat/anchorchat/internal/node"
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
		// Missing arguments are named before the node is looked for.
		{[]string{"send", "@bob"}, "send needs a recipient and a text"},
		{[]string{"send", "--file", "x.png"}, "send --file needs at least one recipient"},
		{[]string{"verify"}, "verify needs one handle"},
		{[]string{"chat"}, "chat needs the people of the conversation"},
		{[]string{"delete"}, "delete needs one message id"},
		{[]string{"disappear", "@bob"}, "disappear needs the people of the conversation and a duration"},
		{[]string{"tip", "@bob"}, "tip needs a recipient and an amount"},
		{[]string{"tip", "@bob", "lots"}, "the amount is a positive number of sat"},
		{[]string{"payments", "cancel"}, "payments cancel needs one tip id"},
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

// Ctrl-C while a client command waits for the node ends it with status
// 130 and "interrupted" (it said "context canceled", status 1); SIGTERM
// ends it with 143 (it was 130 too), as a shell reports each.
func TestInterruptedClientCommand(t *testing.T) {
	for _, tc := range []struct {
		sig  syscall.Signal
		want int
	}{{syscall.SIGINT, 130}, {syscall.SIGTERM, 143}} {
		t.Run(tc.sig.String(), func(t *testing.T) {
			asked := make(chan struct{}, 1)
			gone := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				asked <- struct{}{}
				select { // answers only once the test is over
				case <-gone:
				case <-r.Context().Done():
				}
			}))
			defer srv.Close()
			defer close(gone)
			dir := fakeNodeDir(t, srv.URL)
			cmd := exec.Command(binPath, "status", "--datadir", dir)
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			<-asked
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tc.want || !strings.Contains(errb.String(), "interrupted") || strings.Contains(errb.String(), "context canceled") {
				t.Errorf("status after %v: %v, stderr %q; want status %d and \"interrupted\"", tc.sig, err, errb.String(), tc.want)
			}
		})
	}
}

// fetch talks to the node like every other client command: a refusal
// whose body is not JSON still says what the node answered (it said
// "node API: " and nothing), and a file whose sender gave no usable name is
// saved under the message id (it tried to create a file named "").
func TestFetchAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("id") {
		case "gone":
			http.Error(w, "no such thing", http.StatusNotFound)
		default:
			w.Header().Set("Content-Disposition", `attachment; filename="/"`)
			_, _ = w.Write([]byte("the attachment"))
		}
	}))
	defer srv.Close()
	dir := fakeNodeDir(t, srv.URL)
	fetch := func(id string) (string, error) {
		cmd := exec.Command(binPath, "fetch", "--datadir", dir, id)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := fetch("gone"); err == nil || !strings.Contains(out, "404 Not Found") {
		t.Errorf("fetch of a file the node does not have: %v, %q; want an error naming the node's 404", err, out)
	}
	out, err := fetch("abc123")
	if err != nil {
		t.Fatalf("fetch: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "abc123")); err != nil || string(b) != "the attachment" {
		t.Fatalf("the attachment saved under the message id: %q, %v (fetch said %q)", b, err, out)
	}
}

// fakeNodeDir is a data dir whose runtime file and token send the CLI to
// apiURL, a test server standing in for a node's local API (the runtime
// file names this test's own pid, a live one).
func fakeNodeDir(t *testing.T, apiURL string) string {
	t.Helper()
	dir := t.TempDir()
	rt, _ := json.Marshal(node.Runtime{PID: os.Getpid(), Network: "regtest", APIURL: apiURL})
	if err := os.WriteFile(filepath.Join(dir, node.RuntimeFile), rt, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, node.TokenFile), []byte(strings.Repeat("7", 64)), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// `chat` whose node stops says so (it said "watching: EOF"), with a
// failing status: the conversation did not end by the user's choice.
func TestChatSaysWhenTheNodeStops(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/history":
			_, _ = w.Write([]byte(`{"conversation":{"id":"c1","peers":[{"name":"@bob","status":"VERIFIED"}]},"messages":[]}`))
		case "/v1/watch":
			w.Header().Set("Content-Type", "application/x-ndjson")
			_, _ = w.Write([]byte(`{"type":"deleted","conversation":"c1","message_id":"abcdef0123456789"}` + "\n"))
			// then the stream ends, as when the node stops
		default:
			_, _ = w.Write([]byte(`{}`))
		}
	}))
	defer srv.Close()
	dir := fakeNodeDir(t, srv.URL)
	cmd := exec.Command(binPath, "chat", "--no-input", "--datadir", dir, "@bob")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err == nil || !strings.Contains(errb.String(), "the node stopped") || strings.Contains(errb.String(), "EOF") {
		t.Errorf("chat whose node stopped: %v, stderr %q; want a failure saying the node stopped", err, errb.String())
	}
	if !strings.Contains(out.String(), "was deleted") {
		t.Errorf("the stream's event before it ended was not shown: %q", out.String())
	}
}
