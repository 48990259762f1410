package node_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/internal/node"
	"github.com/anchorchat/anchorchat/internal/nostrclient"
	"github.com/anchorchat/anchorchat/internal/testutil"
)

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	conf := "# comment\nlog.level = warn\nrelay.max-limit = 10\nrelay.open = true\nrelay.allow = " + strings.Repeat("a", 64) + "\n"
	if err := os.WriteFile(filepath.Join(dir, "anchorchat.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"ANCHORCHAT_RELAY_MAX_LIMIT": "20", "ANCHORCHAT_LOG_LEVEL": "error"}
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	cfg, err := node.Load(fs, []string{"--datadir", dir, "--network", "regtest", "--log.level", "debug"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LogLevel != "debug" {
		t.Errorf("log.level = %q: the flag must beat env and file", cfg.LogLevel)
	}
	if cfg.Relay.Limits.MaxLimit != 20 {
		t.Errorf("relay.max-limit = %d: the environment must beat the file", cfg.Relay.Limits.MaxLimit)
	}
	if !cfg.Relay.Open || len(cfg.Relay.Allow) != 1 {
		t.Errorf("file settings not applied: open=%v allow=%v", cfg.Relay.Open, cfg.Relay.Allow)
	}
	if cfg.Listen != "127.0.0.1:34848" || cfg.APIListen != "127.0.0.1:34849" {
		t.Errorf("regtest defaults: listen %q api %q", cfg.Listen, cfg.APIListen)
	}
	if cfg.Relay.Limits.MaxMessageLength != 256<<10 {
		t.Errorf("default not kept: %d", cfg.Relay.Limits.MaxMessageLength)
	}

	// The default data dir follows the network.
	cfg, err = node.Load(flag.NewFlagSet("node", flag.ContinueOnError), []string{"--network", "signet"}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(cfg.DataDir, filepath.Join(".anchorchat", "signet")) {
		t.Errorf("default datadir %q", cfg.DataDir)
	}

	for name, bad := range map[string]string{
		"unknown key": "relay.nope = 1\n",
		"bad value":   "relay.max-limit = lots\n",
		"no equals":   "relay.open\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, "anchorchat.conf"), []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := node.Load(flag.NewFlagSet("node", flag.ContinueOnError), []string{"--datadir", dir}, func(string) string { return "" })
		if err == nil || !strings.Contains(err.Error(), "anchorchat.conf:1") {
			t.Errorf("%s: error %v should name the file and line", name, err)
		}
	}
	_, err = node.Load(flag.NewFlagSet("node", flag.ContinueOnError), []string{"--network", "moon", "--datadir", dir}, func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "unknown network") {
		t.Errorf("bad network: %v", err)
	}

	// network, datadir and config choose the file: it may repeat them, not
	// change them (a flag or the environment beats the file anyway).
	home := t.TempDir()
	t.Setenv("HOME", home)
	def := filepath.Join(home, ".anchorchat", "mainnet")
	if err := os.MkdirAll(def, 0o700); err != nil {
		t.Fatal(err)
	}
	for conf, wantErr := range map[string]string{
		"network = mainnet\n":          "",
		"network = regtest\n":          "sets network = regtest, but it was read as the config file of network mainnet",
		"datadir = " + def + "\n":      "",
		"datadir = /elsewhere\n":       "sets datadir = /elsewhere",
		"config = /elsewhere/x.conf\n": "sets config = /elsewhere/x.conf",
	} {
		if err := os.WriteFile(filepath.Join(def, "anchorchat.conf"), []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := node.Load(flag.NewFlagSet("node", flag.ContinueOnError), nil, func(string) string { return "" })
		switch {
		case wantErr == "" && (err != nil || cfg.Network != "mainnet" || cfg.DataDir != def):
			t.Errorf("%q: %v", conf, err)
		case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
			t.Errorf("%q: error %v, want %q", conf, err, wantErr)
		}
	}
	// A data dir named outright keeps the network its file records
	// (identity create --network testnet --datadir D writes it there).
	if err := os.WriteFile(filepath.Join(dir, "anchorchat.conf"), []byte("network = testnet\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfg, err := node.Load(flag.NewFlagSet("node", flag.ContinueOnError), []string{"--datadir", dir}, func(string) string { return "" }); err != nil || cfg.Network != "testnet" {
		t.Errorf("--datadir with network = testnet in its file: %v", err)
	}
}

func TestConfigFileHostsAndRelayURL(t *testing.T) {
	load := func(args ...string) (*node.Config, error) {
		return node.Load(flag.NewFlagSet("node", flag.ContinueOnError), append([]string{"--datadir", t.TempDir()}, args...), func(string) string { return "" })
	}
	for _, c := range []struct {
		args []string
		want bool
	}{
		{[]string{"--network", "regtest"}, true}, // every regtest node is on loopback
		{[]string{"--network", "mainnet"}, false},
		{[]string{"--network", "signet"}, false},
		{[]string{"--network", "regtest", "--files.allow-private-hosts=false"}, false},
		{[]string{"--network", "mainnet", "--files.allow-private-hosts"}, true},
	} {
		cfg, err := load(c.args...)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.AllowPrivateFileHosts != c.want {
			t.Errorf("%v: AllowPrivateFileHosts %v, want %v", c.args, cfg.AllowPrivateFileHosts, c.want)
		}
	}
	// Relays other people name: the same defaults, from a flag, the
	// environment or the config file.
	for _, c := range []struct {
		args []string
		env  string
		file string
		want bool
	}{
		{args: []string{"--network", "regtest"}, want: true},
		{args: []string{"--network", "mainnet"}, want: false},
		{args: []string{"--network", "testnet"}, want: false},
		{args: []string{"--network", "regtest", "--chat.allow-private-relays=false"}, want: false},
		{args: []string{"--network", "mainnet", "--chat.allow-private-relays"}, want: true},
		{args: []string{"--network", "signet"}, env: "true", want: true},
		{args: []string{"--network", "regtest"}, env: "false", want: false},
		{args: []string{"--network", "mainnet"}, file: "chat.allow-private-relays = true\n", want: true},
		{args: []string{"--network", "regtest"}, file: "chat.allow-private-relays = false\n", want: false},
	} {
		dir := t.TempDir()
		if c.file != "" {
			if err := os.WriteFile(filepath.Join(dir, "anchorchat.conf"), []byte(c.file), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		getenv := func(k string) string {
			if k == "ANCHORCHAT_CHAT_ALLOW_PRIVATE_RELAYS" {
				return c.env
			}
			return ""
		}
		cfg, err := node.Load(flag.NewFlagSet("node", flag.ContinueOnError), append([]string{"--datadir", dir}, c.args...), getenv)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.AllowPrivateRelays != c.want {
			t.Errorf("%v env %q file %q: AllowPrivateRelays %v, want %v", c.args, c.env, c.file, cfg.AllowPrivateRelays, c.want)
		}
	}
	for _, bad := range []string{"https://relay.example", "relay.example", "wss://", "wss://relay.example/?x=1", "wss://u:p@relay.example"} {
		if _, err := load("--relay.url", bad); err == nil || !strings.Contains(err.Error(), "relay.url") {
			t.Errorf("relay.url %q: %v", bad, err)
		}
	}
	if _, err := load("--relay.alias", "ws://x.onion,https://nope.example"); err == nil || !strings.Contains(err.Error(), "relay.alias") {
		t.Errorf("a bad relay.alias: %v", err)
	}
	if _, err := load("--relay.url", "wss://relay.example/chat/", "--relay.alias", "ws://x.onion"); err != nil {
		t.Errorf("a good relay.url: %v", err)
	}
	cfg, err := load("--relay.trusted-proxy", "127.0.0.1, 10.1.2.3/8,::1", "--relay.trusted-proxy", "::ffff:192.0.2.1,::ffff:172.16.0.0/108")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range cfg.Relay.TrustedProxies {
		got = append(got, p.String())
	}
	if want := "127.0.0.1/32 10.0.0.0/8 ::1/128 192.0.2.1/32 172.16.0.0/12"; strings.Join(got, " ") != want {
		t.Errorf("relay.trusted-proxy: %v, want %s", got, want)
	}
	for _, bad := range []string{"proxy.example", "10.0.0.0/33", "127.0.0.1:8080"} {
		if _, err := load("--relay.trusted-proxy", bad); err == nil || !strings.Contains(err.Error(), "relay.trusted-proxy") {
			t.Errorf("relay.trusted-proxy %q: %v", bad, err)
		}
	}
}

func startNode(t *testing.T, owner string) (*node.Node, *node.Config) {
	t.Helper()
	return startNodeArgs(t, "--datadir", t.TempDir(), "--relay.owner", owner)
}

// startNodeArgs starts a regtest node on loopback with args added to its
// flags (no file, no environment), and closes it when the test ends.
func startNodeArgs(t *testing.T, args ...string) (*node.Node, *node.Config) {
	t.Helper()
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	cfg, err := node.Load(fs, append([]string{"--network", "regtest", "--listen", "127.0.0.1:0"}, args...), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n, cfg
}

func TestAPIAndMetrics(t *testing.T) {
	sk := nostr.GeneratePrivateKey()
	pk, _ := nostr.GetPublicKey(sk)
	n, cfg := startNode(t, pk)

	fi, err := os.Stat(filepath.Join(cfg.DataDir, node.TokenFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("api.token: %v mode %v", err, fi.Mode())
	}
	fi, err = os.Stat(filepath.Join(cfg.DataDir, node.DBFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("events.db: %v mode %v", err, fi.Mode())
	}

	// A Nostr client publishes and reads over the websocket.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := nostrclient.Dial(ctx, n.RelayURL(), nostrclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	evt := nostr.Event{Kind: 1, Content: "hello", CreatedAt: nostr.Now(), Tags: nostr.Tags{}}
	_ = evt.Sign(sk)
	if err := r.Publish(ctx, &evt); err != nil {
		t.Fatalf("publish: %v", err)
	}
	stranger := nostr.GeneratePrivateKey()
	spam := nostr.Event{Kind: 1, Content: "spam", CreatedAt: nostr.Now(), Tags: nostr.Tags{}}
	_ = spam.Sign(stranger)
	if err := r.Publish(ctx, &spam); err == nil || !strings.Contains(err.Error(), "restricted:") {
		t.Fatalf("stranger's publish: %v", err)
	}
	got, err := r.Query(ctx, nostr.Filter{Kinds: []int{1}})
	if err != nil || len(got) != 1 || got[0].ID != evt.ID {
		t.Fatalf("query: %v %v", got, err)
	}

	// The CLI's client finds the node from its data dir.
	c, err := node.Dial(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Events != 1 || st.Owner != pk || st.Network != "regtest" || st.RelayURL != n.RelayURL() {
		t.Fatalf("status %+v", st)
	}
	c.Token = strings.Repeat("0", 64)
	if _, err := c.Status(ctx); err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("wrong token: %v", err)
	}

	resp, err := http.Get(n.HTTPURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"anchorchat_relay_connections 1",
		`anchorchat_relay_events_accepted_total{class="regular"} 1`,
		`anchorchat_relay_events_rejected_total{reason="restricted"} 1`,
		`anchorchat_relay_query_seconds_count{op="req"} 1`,
		`anchorchat_relay_messages_total{verb="EVENT"} 2`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
}

func TestCloseRemovesRuntimeFile(t *testing.T) {
	n, cfg := startNode(t, "")
	rt := filepath.Join(cfg.DataDir, node.RuntimeFile)
	if _, err := os.Stat(rt); err != nil {
		t.Fatalf("runtime file missing while running: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(rt); !os.IsNotExist(err) {
		t.Fatalf("runtime file left after Close: %v", err)
	}
	if _, err := node.Dial(cfg.DataDir); err == nil || !strings.Contains(err.Error(), "no node is running") {
		t.Fatalf("Dial after Close: %v", err)
	}
}

// A node that cannot start says why and leaves nothing running or behind.
func TestStartFailureCleansUp(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	cfg, err := node.Load(flag.NewFlagSet("node", flag.ContinueOnError), []string{"--datadir", dir, "--network", "regtest", "--listen", busy.Addr().String()}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err == nil || n != nil || !strings.Contains(err.Error(), "relay listener") {
		t.Fatalf("Start on a busy port: %v, %v", n, err)
	}
	if _, err := os.Stat(filepath.Join(dir, node.RuntimeFile)); !os.IsNotExist(err) {
		t.Fatalf("runtime file written by a failed start: %v", err)
	}
	// The store was closed: a second node can open it.
	cfg.Listen = "127.0.0.1:0"
	cfg.APIListen = "127.0.0.1:0"
	n, err = node.Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("restart after a failed start: %v", err)
	}
	n.Close()
}

// Features that need what a node lacks answer with what to configure.
func TestAPIExplainsMissingFeatures(t *testing.T) {
	_, cfg := startNode(t, strings.Repeat("ab", 32))
	c, err := node.Dial(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"/v1/send":       "anchorchat init",
		"/v1/tip":        "lnd.rpcserver",
		"/v1/anchor/now": "btcd.rpcserver",
	} {
		err := c.Do(context.Background(), http.MethodPost, path, strings.NewReader(`{}`), nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("POST %s on a node without it: %v (want a reason naming %q)", path, err, want)
		}
	}
}

// The relay port closes a keep-alive connection that idles between
// requests; before, anyone could hold connections open there until the
// node ran out of file descriptors. A websocket on the same port stays.
func TestRelayPortClosesIdleConnections(t *testing.T) {
	defer node.SetIdleTimeout(300 * time.Millisecond)()
	pk, _ := nostr.GetPublicKey(nostr.GeneratePrivateKey())
	n, _ := startNode(t, pk)
	addr := strings.TrimPrefix(n.RelayURL(), "ws://")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, err := nostrclient.Dial(ctx, n.RelayURL(), nostrclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /.well-known/nostr.json HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle keep-alive connection: %v after %v, want the server to close it", err, time.Since(start))
	}
	// The websocket idled just as long and still works.
	if _, err := ws.Query(ctx, nostr.Filter{Kinds: []int{1}, Limit: 1}); err != nil {
		t.Fatalf("websocket after the idle timeout: %v", err)
	}
}

// After an unclean stop the runtime file stays behind, naming a dead pid;
// whoever took the API port since must not receive the token.
func TestDialRefusesAStaleRuntimeFile(t *testing.T) {
	pk, _ := nostr.GetPublicKey(nostr.GeneratePrivateKey())
	n, cfg := startNode(t, pk)
	rtPath := filepath.Join(cfg.DataDir, node.RuntimeFile)
	if _, err := node.Dial(cfg.DataDir); err != nil {
		t.Fatalf("Dial of a running node: %v", err)
	}
	b, err := os.ReadFile(rtPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	var rt node.Runtime
	if err := json.Unmarshal(b, &rt); err != nil {
		t.Fatal(err)
	}
	rt.PID = dead.Process.Pid
	b, _ = json.Marshal(rt)
	if err := os.WriteFile(rtPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := node.Dial(cfg.DataDir); err == nil || !strings.Contains(err.Error(), "gone") {
		t.Fatalf("Dial with a dead pid in the runtime file: %v", err)
	}
}

// A second node started on a running node's data dir fails, says that a
// node runs there, and leaves the running node's runtime file alone: the
// CLI still finds the running node. It says so before anything else: it
// neither asks for the identity's passphrase (here it has none to give) nor
// replaces an API token others may read, which would lock the CLI out of
// the running node.
func TestSecondNodeOnADataDirLeavesTheFirstAlone(t *testing.T) {
	pk, _ := nostr.GetPublicKey(nostr.GeneratePrivateKey())
	_, cfg := startNode(t, pk)
	key, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	ks := node.Keystore(cfg.DataDir, slog.New(slog.DiscardHandler))
	ks.LogN = 4
	if err := ks.Create(context.Background(), key, "a quiet lighthouse keeps seven ledgers"); err != nil {
		t.Fatal(err)
	}
	tokenPath := filepath.Join(cfg.DataDir, node.TokenFile)
	token, err := os.ReadFile(tokenPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tokenPath, 0o644); err != nil {
		t.Fatal(err)
	}
	pass := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(pass, []byte("a quiet lighthouse keeps seven ledgers\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, extra := range [][]string{nil, {"--passphrase-file", pass}} { // no passphrase to give; the right one
		again, err := node.Load(flag.NewFlagSet("node", flag.ContinueOnError), append([]string{"--datadir", cfg.DataDir, "--network", "regtest", "--listen", "127.0.0.1:0", "--relay.owner", pk}, extra...), func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		n2, err := node.Start(context.Background(), again, slog.New(slog.DiscardHandler))
		if err == nil {
			n2.Close()
			t.Fatal("a second node started on a data dir in use")
		}
		if !strings.Contains(err.Error(), "already running") {
			t.Errorf("second node %v: %v, want it to say a node is already running there", extra, err)
		}
		if now, err := os.ReadFile(tokenPath); err != nil || string(now) != string(token) {
			t.Errorf("second node %v: the running node's API token was replaced (%v)", extra, err)
		}
	}
	if err := os.Chmod(tokenPath, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := node.Dial(cfg.DataDir)
	if err != nil {
		t.Fatalf("Dial of the running node after a second one failed to start: %v", err)
	}
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatalf("status of the running node: %v", err)
	}
}

// The CLI's client waits longer than the node's own bounds on a request
// (send --wait waits 30 s once the message is out, after looking up its
// recipients; fetch gives the download 60 s): before, it gave up at 30 s
// and said the node was unreachable while the node was still answering.
// When it does give up, it says the node did not answer in time, not that
// it is not running.
func TestClientOutwaitsTheNode(t *testing.T) {
	pk, _ := nostr.GetPublicKey(nostr.GeneratePrivateKey())
	_, cfg := startNode(t, pk)
	c, err := node.Dial(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if tm := c.HTTP.Timeout; tm != 0 && tm < 2*time.Minute {
		t.Errorf("the client gives up after %v, before the node's slowest answers", tm)
	}

	gone := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-gone // answers only once the test is over
	}))
	defer srv.Close()
	defer close(gone)
	slow := &node.Client{BaseURL: srv.URL, Token: "t", HTTP: &http.Client{Timeout: 50 * time.Millisecond}}
	err = slow.Do(context.Background(), http.MethodPost, "/v1/send", strings.NewReader(`{}`), nil)
	if err == nil || strings.Contains(err.Error(), "is the node running") || !strings.Contains(err.Error(), "did not answer") {
		t.Errorf("a node that answers too late: %v, want it to say the node did not answer in time", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = slow.Do(ctx, http.MethodGet, "/v1/status", nil, nil)
	if !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "is the node running") {
		t.Errorf("an interrupted request: %v, want context.Canceled and no guess about the node", err)
	}
}

// An api.token others may read (a data dir copied without its modes) may
// have leaked: the node replaces it with a new one, mode 0600, so the old
// token no longer works.
func TestNodeReplacesAnAPITokenOthersMayRead(t *testing.T) {
	dir := t.TempDir()
	old := strings.Repeat("5a", 32)
	path := filepath.Join(dir, node.TokenFile)
	if err := os.WriteFile(path, []byte(old+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	pk, _ := nostr.GetPublicKey(nostr.GeneratePrivateKey())
	cfg, err := node.Load(flag.NewFlagSet("node", flag.ContinueOnError), []string{"--datadir", dir, "--network", "regtest", "--listen", "127.0.0.1:0", "--relay.owner", pk}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("api.token after start: %v, mode %v, want 0600", err, fi.Mode().Perm())
	}
	c, err := node.Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	if c.Token == old {
		t.Fatal("the node kept the token others could read")
	}
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatalf("status with the new token: %v", err)
	}
	c.Token = old
	if _, err := c.Status(context.Background()); err == nil {
		t.Fatal("the old token still works")
	}
}

// Every answer of the local API is JSON, an unknown endpoint's and a wrong
// method's too (they were the mux's plain text), and a 401 names the scheme.
func TestAPIErrorsAreJSON(t *testing.T) {
	pk, _ := nostr.GetPublicKey(nostr.GeneratePrivateKey())
	_, cfg := startNode(t, pk)
	c, err := node.Dial(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, path, token string
		code                int
		want, allow         string
	}{
		{http.MethodGet, "/v1/nope", c.Token, http.StatusNotFound, "/v1/nope", ""},
		{http.MethodPost, "/v1/status", c.Token, http.StatusMethodNotAllowed, "GET", "GET, HEAD"},
		{http.MethodGet, "/v1/status", "", http.StatusUnauthorized, "token", ""},
		{http.MethodGet, "/v1/nope", "", http.StatusUnauthorized, "token", ""}, // no token: no hint of what exists
	} {
		req, _ := http.NewRequest(tc.method, c.BaseURL+tc.path, nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Error string }
		decErr := json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		name := tc.method + " " + tc.path
		if resp.StatusCode != tc.code {
			t.Errorf("%s: %d, want %d", name, resp.StatusCode, tc.code)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" || decErr != nil || !strings.Contains(body.Error, tc.want) {
			t.Errorf("%s: %s body %q (%v), want a JSON error naming %q", name, ct, body.Error, decErr, tc.want)
		}
		if tc.allow != "" && resp.Header.Get("Allow") != tc.allow {
			t.Errorf("%s: Allow %q, want %q", name, resp.Header.Get("Allow"), tc.allow)
		}
		if tc.code == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") != "Bearer" {
			t.Errorf("%s: WWW-Authenticate %q, want Bearer", name, resp.Header.Get("WWW-Authenticate"))
		}
	}
}

// A secret key given where a pubkey goes is refused without being echoed:
// the error ends up on terminals and in service logs.
func TestConfigDoesNotEchoASecretKey(t *testing.T) {
	nsec := "nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe5"
	for _, setting := range []string{"--relay.owner", "--relay.allow"} {
		_, err := node.Load(flag.NewFlagSet("node", flag.ContinueOnError), []string{"--datadir", t.TempDir(), "--network", "regtest", setting, nsec}, func(string) string { return "" })
		if err == nil || strings.Contains(err.Error(), nsec[5:20]) || !strings.Contains(err.Error(), "secret key") {
			t.Errorf("%s nsec: %v; want a refusal that says it is a secret key and does not repeat it", setting, err)
		}
	}
}

// No log line names its component twice (storage, the messenger, its blob
// store, the tip engine and its LND client add their own: the node added
// each again, so their JSON lines had the key twice, which log tools read
// as one or refuse). The node here has an identity (so the messenger and
// the blob store run) and an LND configured (the tip engine runs; the LND
// is not there).
func TestLogLinesNameTheirComponentOnce(t *testing.T) {
	var buf syncBuffer
	dir := identityDir(t)
	pass := filepath.Join(dir, "pass")
	for name, data := range map[string]string{"tls.cert": "not a certificate", "x.macaroon": "not a macaroon"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := node.Load(flag.NewFlagSet("node", flag.ContinueOnError), []string{"--datadir", dir, "--network", "regtest", "--listen", "127.0.0.1:0", "--log.format", "json",
		"--passphrase-file", pass, "--lnd.rpcserver", "127.0.0.1:1", "--lnd.tlscertpath", filepath.Join(dir, "tls.cert"), "--lnd.macaroonpath", filepath.Join(dir, "x.macaroon")},
		func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.Start(context.Background(), cfg, cfg.NewLogger(&buf))
	if err != nil {
		t.Fatal(err)
	}
	// The tip engine's first line is its invoice stream's retry (the LND
	// is not there), from a goroutine: wait for it before closing.
	testutil.Eventually(t, 10*time.Second, "a log line of the tip engine", func() (bool, error) {
		return strings.Contains(buf.String(), `"component":"payments"`), nil
	})
	n.Close()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	seen := map[string]bool{}
	for _, line := range lines {
		if strings.Count(line, `"component":`) > 1 {
			t.Errorf("a log line names its component more than once: %s", line)
		}
		var rec struct{ Component string }
		if json.Unmarshal([]byte(line), &rec) == nil {
			seen[rec.Component] = true
		}
	}
	for _, c := range []string{"storage", "chat", "payments"} {
		if !seen[c] {
			t.Errorf("no %s log line to look at:\n%s", c, buf.String())
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A config file named outright (--config, ANCHORCHAT_CONFIG) must exist: a
// typo in its name ran the node on defaults without a word. The default
// file may be missing.
func TestNamedConfigFileMustExist(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "anchorchat.cnf")
	_, err := node.Load(flag.NewFlagSet("node", flag.ContinueOnError), []string{"--datadir", dir, "--config", missing}, func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("--config naming a missing file: %v, want an error naming it", err)
	}
	_, err = node.Load(flag.NewFlagSet("node", flag.ContinueOnError), []string{"--datadir", dir}, func(k string) string {
		if k == "ANCHORCHAT_CONFIG" {
			return missing
		}
		return ""
	})
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("ANCHORCHAT_CONFIG naming a missing file: %v, want an error naming it", err)
	}
	if _, err := node.Load(flag.NewFlagSet("node", flag.ContinueOnError), []string{"--datadir", dir}, func(string) string { return "" }); err != nil {
		t.Errorf("no config file at the default place: %v", err)
	}
}

// POST /v1/disappearing without the conversation's people is a mistake,
// answered 400: it was answered 200, having set the timer of the
// conversation with nobody but the node's own key.
func TestDisappearingNeedsItsPeople(t *testing.T) {
	dir := identityDir(t)
	startIdentityNode(t, dir)
	c, err := node.Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{`{"after": "1h"}`, `{"with": [], "after": "1h"}`} {
		var res map[string]string
		err := c.Do(context.Background(), "POST", "/v1/disappearing", strings.NewReader(body), &res)
		if err == nil || !strings.Contains(err.Error(), "with") {
			t.Errorf("POST /v1/disappearing %s: %v %v, want an error asking for the people in with", body, res, err)
		}
	}
}

// A message the node refuses for what the request asks is a client's
// mistake, answered 4xx: a message to no one but the node's own key, to
// more people than a conversation holds, or a file over the limit were
// answered 502, as if a relay had failed.
func TestSendMistakesAre4xx(t *testing.T) {
	dir := identityDir(t)
	startIdentityNode(t, dir)
	c, err := node.Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	crowd := make([]string, 0, 120)
	for range cap(crowd) {
		pk, _ := nostr.GetPublicKey(nostr.GeneratePrivateKey())
		crowd = append(crowd, pk)
	}
	for name, req := range map[string]node.SendRequest{
		"to oneself":     {To: []string{st.Npub}, Text: "hi me"},
		"to 120 people":  {To: crowd, Text: "hi all"},
		"a file too big": {To: crowd[:1], FileName: "big", FileData: base64.StdEncoding.EncodeToString(make([]byte, node.MaxFileSize+1))},
	} {
		body, _ := json.Marshal(req)
		hreq, _ := http.NewRequest(http.MethodPost, c.BaseURL+"/v1/send", bytes.NewReader(body))
		hreq.Header.Set("Authorization", "Bearer "+c.Token)
		resp, err := http.DefaultClient.Do(hreq)
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode >= 500 || e.Error == "" {
			t.Errorf("send %s: %d %q, want a 4xx with why", name, resp.StatusCode, e.Error)
		}
	}
}
