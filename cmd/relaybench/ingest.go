package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gws "github.com/gorilla/websocket"
	"github.com/nbd-wtf/go-nostr"
)

type ingestResult struct {
	n        int
	rate     float64
	p50, p99 time.Duration
	usage    usage // of the whole process (relay and clients) while the events went in
}

// ingest publishes n pre-signed events over conns connections, each writing
// as fast as it can (pipelining) while a reader collects the OKs.
func ingest(ctx context.Context, url string, owner keypair, n, conns, window int) (ingestResult, error) {
	now := nostr.Now()
	evts := signAll(n, func(i int) nostr.Event {
		return nostr.Event{Kind: 1, Content: fmt.Sprintf("ingest benchmark event %d with a little text", i), CreatedAt: now,
			Tags: nostr.Tags{{"t", "bench"}, {"p", owner.pk}}}
	}, owner)
	frames := make([][]byte, n)
	for i := range evts {
		frames[i], _ = json.Marshal([]any{"EVENT", evts[i]})
	}

	// Each connection's OKs are matched to its EVENTs in sending order
	// (sendOrder), so the clients spend no CPU on a map of ids.
	type connState struct {
		ws     *gws.Conn
		bc     *batchConn
		mine   []int          // indexes into evts, in sending order
		sentAt []atomic.Int64 // by position in mine: when it was queued, in ns since start
		window chan struct{}
		done   chan struct{} // closed when the reader stops, so a waiting writer stops too
	}
	var (
		wg        sync.WaitGroup
		latMu     sync.Mutex
		latencies = make([]time.Duration, 0, n)
		accepted  int
		firstErr  error
	)
	states := make([]*connState, conns)
	for c := range states {
		// Publishers use gorilla/websocket (a plain write and read per
		// message), so the clients cost the shared CPUs as little as possible.
		var bc *batchConn
		dialer := *gws.DefaultDialer
		dialer.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			bc = &batchConn{Conn: c}
			return bc, nil
		}
		ws, _, err := dialer.DialContext(ctx, url, nil)
		if err != nil {
			return ingestResult{}, err
		}
		bc.setBatching(true)
		ws.SetReadLimit(1 << 20)
		var mine []int
		for i := c; i < n; i += conns {
			mine = append(mine, i)
		}
		states[c] = &connState{ws: ws, bc: bc, mine: mine, sentAt: make([]atomic.Int64, len(mine)), window: make(chan struct{}, window), done: make(chan struct{})}
	}
	u0 := readUsage()
	start := time.Now()
	for _, st := range states {
		mine := st.mine
		wg.Add(2)
		go func() {
			defer wg.Done()
			for k, i := range mine {
				select {
				case st.window <- struct{}{}:
				default:
					// The window is full: send what is buffered, then wait for an OK.
					if st.bc.flush() != nil {
						return
					}
					select {
					case st.window <- struct{}{}:
					case <-st.done:
						return
					}
				}
				st.sentAt[k].Store(int64(time.Since(start)))
				if err := st.ws.WriteMessage(gws.TextMessage, frames[i]); err != nil {
					return
				}
				if st.bc.buffered() >= 16<<10 && st.bc.flush() != nil {
					return
				}
			}
			_ = st.bc.flush()
		}()
		go func() {
			defer wg.Done()
			defer close(st.done)
			local := make([]time.Duration, 0, len(mine))
			ok := 0
			var buf bytes.Buffer
			order := newSendOrder(len(mine), func(k int) string { return evts[mine[k]].ID })
			for got := 0; got < len(mine); {
				_, rd, err := st.ws.NextReader()
				if err == nil {
					buf.Reset()
					_, err = buf.ReadFrom(rd)
				}
				if err != nil {
					latMu.Lock()
					firstErr = err
					latMu.Unlock()
					return
				}
				id, accepted, isOK := parseOK(buf.Bytes())
				if !isOK {
					continue
				}
				k, sent := order.ack(id)
				if !sent {
					latMu.Lock()
					firstErr = fmt.Errorf("an OK for an event this connection did not send, or twice: %q", id)
					latMu.Unlock()
					return
				}
				got++
				<-st.window
				if accepted {
					ok++
					local = append(local, time.Since(start)-time.Duration(st.sentAt[k].Load()))
				}
			}
			latMu.Lock()
			latencies = append(latencies, local...)
			accepted += ok
			latMu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	used := readUsage().sub(u0)
	for _, st := range states {
		st.ws.Close()
	}
	if firstErr != nil {
		return ingestResult{}, fmt.Errorf("ingest: %w", firstErr)
	}
	if accepted != n {
		return ingestResult{}, fmt.Errorf("ingest: only %d of %d events accepted", accepted, n)
	}
	p50, p99 := percentiles(latencies)
	return ingestResult{n: accepted, rate: float64(accepted) / elapsed.Seconds(), p50: p50, p99: p99, usage: used}, nil
}

// sendOrder matches a connection's OKs to its EVENTs. The relay answers in
// commit order, so an OK is almost always for the oldest event not yet
// acknowledged; one out of order is found by a scan from there.
type sendOrder struct {
	ids   []string // in sending order
	acked []bool
	head  int // the first position not yet acknowledged
}

func newSendOrder(n int, id func(k int) string) *sendOrder {
	s := &sendOrder{ids: make([]string, n), acked: make([]bool, n)}
	for k := range s.ids {
		s.ids[k] = id(k)
	}
	return s
}

// ack marks the event with this id acknowledged and returns its position;
// false if no unacknowledged event has it.
func (s *sendOrder) ack(id string) (int, bool) {
	k := s.head
	for k < len(s.ids) && (s.acked[k] || s.ids[k] != id) {
		k++
	}
	if k == len(s.ids) {
		return 0, false
	}
	s.acked[k] = true
	for s.head < len(s.ids) && s.acked[s.head] {
		s.head++
	}
	return k, true
}

// parseOK reads an ["OK",<id>,<bool>,<message>] frame without a JSON
// decoder, so the clients cost the shared CPUs little; any other frame, or an
// OK in an unexpected layout, is decoded with encoding/json.
func parseOK(frame []byte) (id string, accepted, isOK bool) {
	const prefix = `["OK","`
	if len(frame) > len(prefix)+64+2 && string(frame[:len(prefix)]) == prefix && frame[len(prefix)+64] == '"' && frame[len(prefix)+65] == ',' {
		rest := frame[len(prefix)+66:]
		switch {
		case len(rest) >= 4 && string(rest[:4]) == "true":
			return string(frame[len(prefix) : len(prefix)+64]), true, true
		case len(rest) >= 5 && string(rest[:5]) == "false":
			return string(frame[len(prefix) : len(prefix)+64]), false, true
		}
	}
	var msg []json.RawMessage
	if json.Unmarshal(frame, &msg) != nil || len(msg) < 3 || string(msg[0]) != `"OK"` {
		return "", false, false
	}
	_ = json.Unmarshal(msg[1], &id)
	return id, string(msg[2]) == "true", true
}

// usage is what the process used, from getrusage(2): the CPU time splits
// into user and system (the kernel: sockets, fsync, page faults), and the
// fault and context-switch counts say where the system time goes.
type usage struct {
	user, sys     time.Duration
	minflt        int64 // minor page faults: memory touched for the first time
	nvcsw, nivcsw int64 // voluntary (blocked) and involuntary (preempted) context switches
}

func readUsage() usage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return usage{}
	}
	return usage{
		user: time.Duration(ru.Utime.Nano()), sys: time.Duration(ru.Stime.Nano()),
		minflt: int64(ru.Minflt), nvcsw: int64(ru.Nvcsw), nivcsw: int64(ru.Nivcsw),
	}
}

func (u usage) sub(v usage) usage {
	return usage{u.user - v.user, u.sys - v.sys, u.minflt - v.minflt, u.nvcsw - v.nvcsw, u.nivcsw - v.nivcsw}
}

// cpu is user + system CPU time.
func (u usage) cpu() time.Duration { return u.user + u.sys }

// batchConn lets a publisher pipeline the way a bulk client does: the frames
// gorilla/websocket writes collect in a buffer and leave in one write when the
// publisher flushes (its window is full, or 16 KiB are waiting), rather than
// one syscall per EVENT. An OK's latency is still measured from the moment its
// EVENT was queued.
type batchConn struct {
	net.Conn
	mu       sync.Mutex
	batching bool // off during the handshake
	buf      []byte
}

func (c *batchConn) setBatching(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batching = on
}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.batching {
		return c.Conn.Write(p)
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

func (c *batchConn) buffered() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.buf)
}

func (c *batchConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

func (c *batchConn) Close() error {
	_ = c.flush()
	return c.Conn.Close()
}
