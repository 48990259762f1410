package relay

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"sync"
)

// maxCoalesce bounds the bytes held back before they are written anyway.
const maxCoalesce = 64 << 10

// coalescer sits between the websocket library and the TCP connection. The
// library writes each message with one syscall; while the
// connection's writer goroutine knows more messages are queued it sets hold,
// and the coalescer keeps the bytes, so a burst of EVENTs (a REQ's results,
// a run of OKs) leaves in a few large writes instead of one syscall each.
// With hold off, writes go straight through together with anything held.
type coalescer struct {
	mu   sync.Mutex
	conn net.Conn
	buf  []byte
	hold bool
}

func (c *coalescer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hold && len(c.buf)+len(p) <= maxCoalesce {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	if len(c.buf) > 0 {
		c.buf = append(c.buf, p...)
		_, err := c.conn.Write(c.buf)
		c.buf = c.buf[:0]
		return len(p), err
	}
	return c.conn.Write(p)
}

// setHold turns holding on or off. Turning it off does not write: the next
// Write carries what was held (call flush when no write follows).
func (c *coalescer) setHold(hold bool) {
	c.mu.Lock()
	c.hold = hold
	c.mu.Unlock()
}

// flush stops holding and writes what was held.
func (c *coalescer) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hold = false
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.conn.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

// coalescingWriter makes the websocket library write through a coalescer
// when it hijacks the connection.
type coalescingWriter struct {
	http.ResponseWriter
	c *coalescer
}

func (w *coalescingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("relay: the connection cannot be hijacked")
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	if err := brw.Writer.Flush(); err != nil { // anything net/http still held
		conn.Close()
		return nil, nil, err
	}
	w.c.conn = conn
	return coalescedConn{conn, w.c}, brw, nil
}

// coalescedConn is the hijacked connection as the websocket library sees it:
// its writes go through the coalescer.
type coalescedConn struct {
	net.Conn
	c *coalescer
}

func (cc coalescedConn) Write(p []byte) (int, error) { return cc.c.Write(p) }
