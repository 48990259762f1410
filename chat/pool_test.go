package chat

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// tcpProxy forwards connections to a relay and counts them: what the
// relay behind it sees, and a way to cut every connection at once.
type tcpProxy struct {
	url   string
	ln    net.Listener
	mu    sync.Mutex
	total int
	open  map[net.Conn]bool
	hold  chan struct{}         // if set, connections reach the relay once it is closed
	ups   map[net.Conn]net.Conn // each open connection's own to the relay
	mute  map[net.Conn]bool     // silenced: kept open, never answered
}

// viaProxy puts a proxy in front of bob's relay as the only relay of his
// kind 10050 list, and starts alice's service, which finds that list on
// bob's relay (and, the proxy being on loopback, allows private relays),
// with mutate applied too.
func viaProxy(t *testing.T, alice, bob *user, mutate func(*Config)) (*tcpProxy, *Service) {
	t.Helper()
	proxy := startProxy(t, bob.relay.Addr)
	bob.publishDMRelays(t, bob.relay.url, proxy.url)
	as := alice.start(t, func(c *Config) {
		c.DiscoveryRelays = []string{bob.relay.url}
		c.AllowPrivateRelays = true // bob's DM relay, on loopback, is only in his list
		mutate(c)
	})
	return proxy, as
}

// holdConnections makes connections wait, unanswered, until the returned
// func lets them through.
func (p *tcpProxy) holdConnections() (release func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hold = make(chan struct{})
	return sync.OnceFunc(func() { close(p.hold) })
}

func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{url: "ws://" + ln.Addr().String(), ln: ln, open: map[net.Conn]bool{}, ups: map[net.Conn]net.Conn{}, mute: map[net.Conn]bool{}}
	t.Cleanup(func() { _ = ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.total++
			p.open[c] = true
			p.mu.Unlock()
			go p.forward(c, target)
		}
	}()
	return p
}

func (p *tcpProxy) forward(c net.Conn, target string) {
	defer func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		delete(p.ups, c)
		if p.mute[c] { // silenced: read and drop what the client sends, answer nothing
			go func() { _, _ = io.Copy(io.Discard, c) }()
			return
		}
		_ = c.Close()
		delete(p.open, c)
	}()
	p.mu.Lock()
	hold := p.hold
	p.mu.Unlock()
	if hold != nil {
		<-hold
	}
	up, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer up.Close()
	p.mu.Lock()
	p.ups[c] = up
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
}

// counts returns the connections made so far and those still open.
func (p *tcpProxy) counts() (total, open int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total, len(p.open)
}

// cut closes every open connection, as a relay going away would.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.open {
		_ = c.Close()
	}
}

// silence makes the open connections dead without the client being told:
// the relay's side goes, but no FIN or RST reaches the client (a NAT that
// forgot the mapping, a host gone from the network), which sees only that
// nothing answers. New connections get through.
func (p *tcpProxy) silence() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c, up := range p.ups {
		p.mute[c] = true
		_ = up.Close()
	}
}

func poolSize(s *Service) int {
	s.poolMu.Lock()
	defer s.poolMu.Unlock()
	return len(s.pool)
}

// TestIdleRelayConnectionsAreClosed: the connections alice's outbox and
// lookups opened (bob's DM relay, the relay his list was found on, her own)
// are closed once idle for RelayIdleTimeout, and the next message dials
// again. Before, every relay ever written to kept its websocket until
// Close.
func TestIdleRelayConnectionsAreClosed(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	alice, bob := newUser(t, clk, "alice"), newUser(t, clk, "bob")
	proxy, as := viaProxy(t, alice, bob, func(c *Config) { c.RelayIdleTimeout = 300 * time.Millisecond })
	send := func(text string) {
		t.Helper()
		m, err := as.Send(ctx, []string{bob.key.PublicKey()}, text, SendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if m, err = as.WaitSent(ctxT(t, 10*time.Second), m.ID); err != nil || m.State != StateSent {
			t.Fatalf("%q: %+v (%v)", text, m, err)
		}
	}
	send("hello")
	eventually(t, 10*time.Second, "every pooled connection to be closed once idle", func() (bool, error) {
		total, open := proxy.counts()
		n := poolSize(as)
		return n == 0 && total == 1 && open == 0, fmt.Errorf("%d pooled; bob's DM relay saw %d connections, %d open", n, total, open)
	})
	send("hello again")
	if total, _ := proxy.counts(); total != 2 {
		t.Fatalf("bob's DM relay saw %d connections, want a second one for the second message", total)
	}
}

// TestDeadRelayConnectionsAreDropped: a pooled connection the relay drops
// leaves the pool at once, however long the idle timeout.
func TestDeadRelayConnectionsAreDropped(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	alice, bob := newUser(t, clk, "alice"), newUser(t, clk, "bob")
	proxy, as := viaProxy(t, alice, bob, func(c *Config) { c.RelayIdleTimeout = time.Hour })
	m, err := as.Send(ctx, []string{bob.key.PublicKey()}, "hello", SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := as.WaitSent(ctxT(t, 10*time.Second), m.ID); err != nil {
		t.Fatal(err)
	}
	pooled := func() bool {
		as.poolMu.Lock()
		defer as.poolMu.Unlock()
		return as.pool[proxy.url] != nil
	}
	if !pooled() {
		t.Fatal("the connection to bob's DM relay is not pooled")
	}
	proxy.cut()
	eventually(t, 10*time.Second, "the dropped connection to leave the pool", func() (bool, error) {
		return !pooled(), nil
	})
}

// TestSilentRelayConnectionIsDialledAgain: a pooled connection on which
// the relay stopped answering without closing it (a NAT that forgot the
// mapping, a relay host gone from the network: no FIN, no RST) leaves the
// pool once a publish on it gets no OK in time, so the retry dials again.
// Before, it looked alive until the TCP stack gave up, and every retry
// (and every new message) used it and timed out, as long as the
// connection was used more often than RelayIdleTimeout.
func TestSilentRelayConnectionIsDialledAgain(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	alice, bob := newUser(t, clk, "alice"), newUser(t, clk, "bob")
	proxy, as := viaProxy(t, alice, bob, func(c *Config) {
		c.RelayIdleTimeout = time.Hour
		c.PublishTimeout = 300 * time.Millisecond
	})
	send := func(text string) *Message {
		t.Helper()
		m, err := as.Send(ctx, []string{bob.key.PublicKey()}, text, SendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m, err := as.WaitSent(ctxT(t, 10*time.Second), send("hello").ID); err != nil || m.State != StateSent {
		t.Fatalf("first message: %+v (%v)", m, err)
	}
	proxy.silence()
	m, err := as.WaitSent(ctxT(t, 20*time.Second), send("are you there").ID)
	if err != nil || m.State != StateSent {
		total, _ := proxy.counts()
		t.Fatalf("a message after the relay's connection went silent: %v (%v); bob's DM relay saw %d connections", m.Status(), err, total)
	}
	if total, _ := proxy.counts(); total != 2 {
		t.Fatalf("bob's DM relay saw %d connections, want 2", total)
	}
}

// TestLookupPastItsDeadlineLeavesThePooledConnection: a lookup whose
// context is already done (learnHandle and resolveHandle ask relay after
// relay under one deadline, which a relay that hangs can use up) fails
// without writing, and the pooled connection it would have used, here held
// by a delivery, stays open. Before, the REQ was written with the done
// context, and coder/websocket closes the connection when a write starts
// with one (about one time in four): the delivery in flight on it lost its
// OK and was retried.
func TestLookupPastItsDeadlineLeavesThePooledConnection(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	alice := newUser(t, clk, "alice")
	as := alice.start(t, nil)
	url := alice.relay.url
	c, release, err := as.conn(ctx, url) // a delivery using the connection
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	done, cancel := context.WithCancel(ctx)
	cancel()
	f := nostr.Filter{Kinds: []int{KindDMRelayList}, Authors: []string{alice.key.PublicKey()}, Limit: 1}
	for range 40 {
		if _, err := as.query(done, url, f); err == nil {
			t.Fatal("a lookup with a done context succeeded")
		}
	}
	time.Sleep(50 * time.Millisecond) // the library closes the connection in the background
	select {
	case <-c.Done():
		t.Fatalf("after lookups past their deadline the pooled connection is closed: %v", c.Err())
	default:
	}
	if _, err := as.query(ctx, url, f); err != nil {
		t.Fatalf("a lookup in time: %v", err)
	}
	if total := poolSize(as); total != 1 {
		t.Fatalf("%d pooled connections, want the one", total)
	}
}
