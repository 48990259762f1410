package chat

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/anchorchat/anchorchat/internal/nostrclient"
)

// pooledConn is a connection of the service's pool (deliveries and
// lookups at other relays), with how many callers use it and since when
// nobody has.
type pooledConn struct {
	c       *nostrclient.Conn
	users   int
	idle    time.Time // when the last user released it
	retired bool      // out of the pool (retire): the last user closes it
}

// conn returns a live pooled connection to url, dialling if needed, and
// the function the caller must call once done with it. A connection nobody
// uses for RelayIdleTimeout is closed; one the relay drops is forgotten at
// once (watchConn).
func (s *Service) conn(ctx context.Context, url string) (*nostrclient.Conn, func(), error) {
	s.poolMu.Lock()
	p := s.livePooled(url)
	if p != nil {
		p.users++
	}
	s.poolMu.Unlock()
	if p != nil {
		return p.c, s.releaser(p), nil
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nc, err := nostrclient.Dial(dctx, url, nostrclient.Options{Dial: s.dialerFor(url), Sign: s.sign})
	if err != nil {
		return nil, nil, err
	}
	s.poolMu.Lock()
	if s.poolClosed || s.ctx.Err() != nil {
		s.poolMu.Unlock()
		nc.Close()
		return nil, nil, fmt.Errorf("relay %s: the service is closing: %w", url, context.Canceled)
	}
	if p = s.livePooled(url); p != nil { // another caller dialled meanwhile
		p.users++
		s.poolMu.Unlock()
		nc.Close()
		return p.c, s.releaser(p), nil
	}
	p = &pooledConn{c: nc, users: 1}
	s.pool[url] = p
	s.wg.Add(1)
	s.poolMu.Unlock()
	go s.watchConn(url, p)
	return nc, s.releaser(p), nil
}

// livePooled is the pool's connection to url if it is still up; a dead
// one is forgotten. The caller holds poolMu.
func (s *Service) livePooled(url string) *pooledConn {
	p := s.pool[url]
	if p == nil {
		return nil
	}
	select {
	case <-p.c.Done():
		delete(s.pool, url)
		return nil
	default:
		return p
	}
}

// releaser returns the function that ends one use of p (once).
func (s *Service) releaser(p *pooledConn) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			s.poolMu.Lock()
			p.users--
			if p.users == 0 {
				p.idle = time.Now()
			}
			last := p.users == 0 && p.retired
			s.poolMu.Unlock()
			if last {
				p.c.Close()
			}
		})
	}
}

// retire takes the connection c to url out of the pool, if it is there:
// the relay did not answer on it in time, and a connection can be dead
// without the socket knowing (a NAT that forgot it, a relay host gone from
// the network: no FIN, no RST), so the next caller dials again instead of
// waiting on it too. Those still using c keep it; the last closes it.
func (s *Service) retire(url string, c *nostrclient.Conn) {
	s.poolMu.Lock()
	p := s.pool[url]
	if p == nil || p.c != c {
		s.poolMu.Unlock()
		return
	}
	delete(s.pool, url)
	p.retired = true
	unused := p.users == 0
	s.poolMu.Unlock()
	s.log.Debug("relay connection retired: no answer in time", "relay", url)
	if unused {
		c.Close()
	}
}

// watchConn runs while p is in the pool: it forgets p when the relay drops
// the connection, and closes it once nobody has used it for
// RelayIdleTimeout, so that the connections to the relays of every contact
// ever written to are not all held until Close.
func (s *Service) watchConn(url string, p *pooledConn) {
	defer s.wg.Done()
	t := time.NewTimer(s.cfg.RelayIdleTimeout)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return // Close closes what is left
		case <-p.c.Done():
			s.forget(url, p)
			s.log.Debug("pooled relay connection lost", "relay", url, "err", p.c.Err())
			return
		case <-t.C:
		}
		left := s.idleLeft(url, p)
		if left <= 0 {
			p.c.Close()
			s.log.Debug("idle relay connection closed", "relay", url)
			return
		}
		t.Reset(left)
	}
}

// idleLeft is how long p may still stay idle; at zero it has been taken
// out of the pool, for the caller to close.
func (s *Service) idleLeft(url string, p *pooledConn) time.Duration {
	s.poolMu.Lock()
	defer s.poolMu.Unlock()
	if p.users > 0 {
		return s.cfg.RelayIdleTimeout
	}
	left := s.cfg.RelayIdleTimeout - time.Since(p.idle)
	if left <= 0 && s.pool[url] == p {
		delete(s.pool, url)
	}
	return left
}

// forget takes p out of the pool if it is still there.
func (s *Service) forget(url string, p *pooledConn) {
	s.poolMu.Lock()
	defer s.poolMu.Unlock()
	if s.pool[url] == p {
		delete(s.pool, url)
	}
}

// closePool closes every pooled connection, all at once: a relay that does
// not answer the close handshake holds up only its own.
func (s *Service) closePool() {
	s.poolMu.Lock()
	conns := make([]*nostrclient.Conn, 0, len(s.pool))
	for u, p := range s.pool {
		conns = append(conns, p.c)
		delete(s.pool, u)
	}
	s.poolMu.Unlock()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(c.Close)
	}
	wg.Wait()
}
