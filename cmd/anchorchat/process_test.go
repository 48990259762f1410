package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/internal/node"
	"github.com/anchorchat/anchorchat/internal/nostrclient"
)

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "anchorchat-bin")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "anchorchat")
	build := exec.Command("go", "build", "-tags", "libsecp256k1", "-o", binPath, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building anchorchat:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is the anchorchat binary running as a node.
type proc struct {
	cmd  *exec.Cmd
	logs *syncWriter // stdout and stderr
	rt   node.Runtime
	done chan error
}

func startProc(t *testing.T, datadir string, args ...string) *proc {
	t.Helper()
	return startProcEnv(t, datadir, nil, args...)
}

func startProcEnv(t *testing.T, datadir string, env []string, args ...string) *proc {
	t.Helper()
	_ = os.Remove(filepath.Join(datadir, node.RuntimeFile)) // a killed node leaves it behind
	p := &proc{logs: &syncWriter{w: new(bytes.Buffer)}, done: make(chan error, 1)}
	p.cmd = exec.Command(binPath, append([]string{"node", "--network", "regtest", "--datadir", datadir, "--listen", "127.0.0.1:0"}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.Env = append(os.Environ(), env...)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("node logs:\n%s", p.logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(datadir, node.RuntimeFile))
		if err == nil && json.Unmarshal(b, &p.rt) == nil && p.rt.PID == p.cmd.Process.Pid {
			return p
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("node exited at start (%v): %s", err, p.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("node did not start: %s", p.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncWriter collects a child's output while the test reads it.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

// A node killed with SIGKILL in the middle of a stream of publishes loses no
// event for which it had sent OK true.
func TestCrashLosesNoAcknowledgedEvent(t *testing.T) {
	sk := nostr.GeneratePrivateKey()
	pk, _ := nostr.GetPublicKey(sk)
	datadir := t.TempDir()
	args := []string{"--relay.owner", pk, "--relay.events-per-second-ip", "0", "--db.sync", "FULL"}
	p := startProc(t, datadir, args...)

	const conns, perConn = 4, 5000
	var (
		mu    sync.Mutex
		acked = map[string]bool{}
		wg    sync.WaitGroup
	)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for c := 0; c < conns; c++ {
		evts := make([][]byte, perConn)
		for i := range evts {
			evt := nostr.Event{Kind: 1, Content: fmt.Sprintf("conn %d event %d", c, i), CreatedAt: nostr.Now(), Tags: nostr.Tags{}}
			_ = evt.Sign(sk)
			evts[i], _ = json.Marshal([]any{"EVENT", evt})
		}
		ws, _, err := websocket.Dial(ctx, p.rt.RelayURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(2)
		go func() { // writer: pipeline everything
			defer wg.Done()
			for _, m := range evts {
				if ws.Write(ctx, websocket.MessageText, m) != nil {
					return
				}
			}
		}()
		go func() { // reader: collect OK true
			defer wg.Done()
			for {
				_, data, err := ws.Read(ctx)
				if err != nil {
					return
				}
				var msg []any
				if json.Unmarshal(data, &msg) == nil && len(msg) == 4 && msg[0] == "OK" && msg[2] == true {
					mu.Lock()
					acked[msg[1].(string)] = true
					mu.Unlock()
				}
			}
		}()
	}
	// Kill once a good part of the stream is acknowledged, while writes are still flowing.
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= conns*perConn/4 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("only %d events acknowledged before the deadline", n)
		}
		time.Sleep(time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	p.done <- nil // for the cleanup
	wg.Wait()
	mu.Lock()
	ackedIDs := make([]string, 0, len(acked))
	for id := range acked {
		ackedIDs = append(ackedIDs, id)
	}
	mu.Unlock()
	if len(ackedIDs) == conns*perConn {
		t.Fatalf("the kill came after every event was acknowledged; the test proves nothing")
	}
	t.Logf("%d of %d events acknowledged before SIGKILL", len(ackedIDs), conns*perConn)

	p2 := startProc(t, datadir, args...)
	r, err := nostrclient.Dial(ctx, p2.rt.RelayURL, nostrclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	found := map[string]bool{}
	for i := 0; i < len(ackedIDs); i += 500 {
		chunk := ackedIDs[i:min(i+500, len(ackedIDs))]
		evts, err := r.Query(ctx, nostr.Filter{IDs: chunk, Limit: len(chunk)})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evts {
			found[e.ID] = true
		}
	}
	var lost []string
	for _, id := range ackedIDs {
		if !found[id] {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d acknowledged events lost after SIGKILL, e.g. %s", len(lost), lost[0])
	}
}

// SIGTERM shuts the node down cleanly: exit status 0, runtime file removed,
// everything acknowledged still there on the next start.
func TestSIGTERMShutsDownCleanly(t *testing.T) {
	sk := nostr.GeneratePrivateKey()
	pk, _ := nostr.GetPublicKey(sk)
	datadir := t.TempDir()
	p := startProc(t, datadir, "--relay.owner", pk)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := nostrclient.Dial(ctx, p.rt.RelayURL, nostrclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	evt := nostr.Event{Kind: 1, Content: "before shutdown", CreatedAt: nostr.Now(), Tags: nostr.Tags{}}
	_ = evt.Sign(sk)
	if err := r.Publish(ctx, &evt); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binPath, "status", "--network", "regtest", "--datadir", datadir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "events: 1") {
		t.Fatalf("status: %v\n%s", err, out)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) || err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p.logs.String())
		}
		p.done <- nil
	case <-time.After(20 * time.Second):
		t.Fatal("node did not stop after SIGTERM")
	}
	if !strings.Contains(p.logs.String(), "node stopped") {
		t.Errorf("no clean-stop log line:\n%s", p.logs.String())
	}
	if _, err := os.Stat(filepath.Join(datadir, node.RuntimeFile)); !os.IsNotExist(err) {
		t.Errorf("runtime file left behind: %v", err)
	}
	out, err = exec.Command(binPath, "status", "--network", "regtest", "--datadir", datadir).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no node is running") {
		t.Errorf("status of a stopped node: %v\n%s", err, out)
	}

	p2 := startProc(t, datadir, "--relay.owner", pk)
	r2, err := nostrclient.Dial(ctx, p2.rt.RelayURL, nostrclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := r2.Query(ctx, nostr.Filter{IDs: []string{evt.ID}})
	if err != nil || len(got) != 1 {
		t.Fatalf("event after restart: %v %v", got, err)
	}
}

func TestHelp(t *testing.T) {
	out, err := exec.Command(binPath, "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "node") || !strings.Contains(string(out), "status") {
		t.Fatalf("--help: %v\n%s", err, out)
	}
	out, err = exec.Command(binPath, "node", "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "-relay.open") || !strings.Contains(string(out), "ANCHORCHAT_") {
		t.Fatalf("node --help: %v\n%s", err, out)
	}
	out, err = exec.Command(binPath, "frobnicate").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `unknown command "frobnicate"`) {
		t.Fatalf("unknown command: %v\n%s", err, out)
	}
}

// The node runs with the timer slack its help promises, on every thread, or
// the one ANCHORCHAT_TIMER_SLACK names, and logs it; a value it cannot read
// stops it with an error that names the variable.
func TestTimerSlack(t *testing.T) {
	// threadSlacks reads the node's threads' slacks, or returns nil where the
	// kernel wants CAP_SYS_NICE for that (a non-root user).
	threadSlacks := func(p *proc) []string {
		t.Helper()
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", p.cmd.Process.Pid))
		if err != nil || len(tasks) < 2 {
			t.Fatalf("threads of the node: %v %v", tasks, err)
		}
		var slacks []string
		for _, task := range tasks {
			b, err := os.ReadFile(filepath.Join("/proc", filepath.Base(task), "timerslack_ns"))
			if errors.Is(err, fs.ErrPermission) {
				return nil
			}
			if err != nil {
				t.Fatal(err)
			}
			slacks = append(slacks, strings.TrimSpace(string(b)))
		}
		slices.Sort(slacks)
		return slices.Compact(slacks)
	}
	// Set but empty is unset (and overrides any value this test inherited).
	for env, want := range map[string]time.Duration{"ANCHORCHAT_TIMER_SLACK=": 500 * time.Microsecond, "ANCHORCHAT_TIMER_SLACK=2ms": 2 * time.Millisecond} {
		p := startProcEnv(t, t.TempDir(), []string{env})
		if logs := p.logs.String(); !strings.Contains(logs, "timer slack") || !strings.Contains(logs, "slack="+want.String()) {
			t.Errorf("%q: the node did not log a timer slack of %v:\n%s", env, want, logs)
		}
		if got := threadSlacks(p); got != nil && !slices.Equal(got, []string{strconv.FormatInt(int64(want), 10)}) {
			t.Errorf("%q: the node's threads run with slacks %v, want %d", env, got, want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, "node", "--network", "regtest", "--datadir", t.TempDir(), "--listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "ANCHORCHAT_TIMER_SLACK=fast")
	out, err := cmd.CombinedOutput()
	if err == nil || ctx.Err() != nil || !strings.Contains(string(out), "ANCHORCHAT_TIMER_SLACK") {
		t.Fatalf("a bad timer slack: %v\n%s", err, out)
	}
}

// A node started with SIGINT ignored (a background job of a script, nohup)
// leaves it ignored, as the shell meant: a Ctrl-C for the script's
// foreground does not stop it; SIGTERM still does, cleanly. signal.Notify
// would have undone the ignoring, so SIGINT stopped it.
func TestIgnoredSIGINTStaysIgnored(t *testing.T) {
	signal.Ignore(os.Interrupt) // inherited by the child as ignored
	// Also if startProc fails: the later tests' children must not inherit it.
	t.Cleanup(func() { signal.Reset(os.Interrupt) })
	p := startProc(t, t.TempDir())
	signal.Reset(os.Interrupt)
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err
		t.Fatalf("the node stopped at a SIGINT it was started ignoring: %v\n%s", err, p.logs.String())
	case <-time.After(2 * time.Second):
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil || !strings.Contains(p.logs.String(), "node stopped") {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p.logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("node did not stop after SIGTERM")
	}
}

// A node stopped while it starts (systemctl stop, Ctrl-C) stops cleanly:
// status 0, like a node stopped after it started, and nothing left behind
// (it ended with "interrupted" and the status of the signal, which a
// service manager reads as a failure). Its start-up is held here at the
// one publish relay it asks for its claims, which accepts the connection
// and never answers.
func TestStopDuringStartUp(t *testing.T) {
	dir, _ := newUser(t, "erin")
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	asked := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := hole.Accept()
			if err != nil {
				return
			}
			asked <- c // held open, unanswered, until the test ends
		}
	}()
	defer func() {
		for len(asked) > 0 {
			(<-asked).Close()
		}
	}()
	cmd := exec.Command(binPath, "node", "--network", "regtest", "--datadir", dir, "--listen", "127.0.0.1:0",
		"--publish-relays", "ws://"+hole.Addr().String())
	logs := &syncWriter{w: new(bytes.Buffer)}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.Env = append(os.Environ(), "ANCHORCHAT_PASSPHRASE="+testPass)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-done
	}()
	select {
	case c := <-asked:
		asked <- c
	case err := <-done:
		done <- err
		t.Fatalf("the node exited before it asked the publish relay: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("the node never asked its publish relay:\n%s", logs.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Errorf("exit after SIGTERM during start-up: %v\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the node did not stop after SIGTERM during start-up:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "interrupted") || !strings.Contains(logs.String(), "stopped during start-up") {
		t.Errorf("want a clean stop during start-up:\n%s", logs.String())
	}
	if _, err := os.Stat(filepath.Join(dir, node.RuntimeFile)); !os.IsNotExist(err) {
		t.Errorf("runtime file left behind: %v", err)
	}
}
