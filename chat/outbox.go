package chat

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/anchorchat/anchorchat/internal/nostrclient"
	"github.com/nbd-wtf/go-nostr"
)

// maxInFlightPerRelay bounds EVENTs awaiting their OK on one connection.
const maxInFlightPerRelay = 64

func (s *Service) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// conn returns a live pooled connection to url, dialling if needed.
func (s *Service) conn(ctx context.Context, url string) (*nostrclient.Conn, error) {
	s.poolMu.Lock()
	c := s.pool[url]
	s.poolMu.Unlock()
	if c != nil {
		select {
		case <-c.Done():
		default:
			return c, nil
		}
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nc, err := nostrclient.Dial(dctx, url, nostrclient.Options{Dial: s.cfg.Dial, Sign: s.sign})
	if err != nil {
		return nil, err
	}
	s.poolMu.Lock()
	defer s.poolMu.Unlock()
	if old := s.pool[url]; old != nil && old != c {
		select {
		case <-old.Done():
		default:
			nc.Close()
			return old, nil
		}
	}
	if s.ctx.Err() != nil {
		nc.Close()
		return nil, s.ctx.Err()
	}
	s.pool[url] = nc
	return nc, nil
}

// newest queries the relays in parallel and returns the newest authentic
// event matching f that any of them has.
func (s *Service) newest(ctx context.Context, relays []string, f nostr.Filter) *nostr.Event {
	var mu sync.Mutex
	var best *nostr.Event
	var wg sync.WaitGroup
	for _, u := range dedupRelays(relays) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			evts, err := s.query(ctx, u, f)
			if err != nil {
				s.log.Debug("lookup failed", "relay", u, "err", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			// The client passes on only events that match f with a valid id
			// and signature: a relay answering with anyone's list (dated in
			// the future, to divert a contact's mail) is not believed.
			for _, e := range evts {
				if best == nil || e.CreatedAt > best.CreatedAt {
					best = e
				}
			}
		}()
	}
	wg.Wait()
	return best
}

func (s *Service) query(ctx context.Context, url string, f nostr.Filter) ([]*nostr.Event, error) {
	c, err := s.conn(ctx, url)
	if err != nil {
		return nil, err
	}
	return c.Query(ctx, f)
}

func (s *Service) outboxLoop() {
	defer s.wg.Done()
	for {
		if err := s.deliverDue(s.ctx); err != nil && s.ctx.Err() == nil {
			s.log.Error("outbox pass failed", "err", err)
		}
		wait := time.Second
		if next, err := s.st.nextDue(s.ctx); err == nil && next > 0 {
			d := time.Duration(next-s.now().UnixMilli()) * time.Millisecond
			if d < wait {
				wait = d
			}
		}
		if wait < 5*time.Millisecond {
			wait = 5 * time.Millisecond
		}
		t := time.NewTimer(wait)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-s.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// deliverDue publishes every due delivery, relays in parallel, and records
// each outcome: ok, retry later (with exponential backoff) or failed.
func (s *Service) deliverDue(ctx context.Context) error {
	for {
		due, err := s.st.dueDeliveries(ctx, s.now().UnixMilli(), 1024)
		if err != nil {
			return err
		}
		if len(due) == 0 {
			return nil
		}
		byRelay := map[string][]delivery{}
		for _, d := range due {
			byRelay[d.Relay] = append(byRelay[d.Relay], d)
		}
		var wg sync.WaitGroup
		for url, ds := range byRelay {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.deliverTo(ctx, url, ds)
			}()
		}
		wg.Wait()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if len(due) < 1024 {
			return nil
		}
	}
}

func (s *Service) deliverTo(ctx context.Context, url string, ds []delivery) {
	c, err := s.conn(ctx, url)
	if err != nil {
		for _, d := range ds {
			s.record(ctx, d, err)
		}
		return
	}
	sem := make(chan struct{}, maxInFlightPerRelay)
	var wg sync.WaitGroup
	for _, d := range ds {
		var evt nostr.Event
		if err := evt.UnmarshalJSON([]byte(d.Wrap)); err != nil {
			s.record(ctx, d, &nostrclient.RejectedError{Relay: url, Reason: "invalid: stored wrap unreadable: " + err.Error()})
			continue
		}
		if d.ExpiresAt > 0 && d.ExpiresAt <= s.now().Unix() {
			s.record(ctx, d, &nostrclient.RejectedError{Relay: url, Reason: "invalid: expired before delivery"})
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			pctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
			err := c.Publish(pctx, &evt)
			cancel()
			s.record(ctx, d, err)
		}()
	}
	wg.Wait()
}

// record stores the outcome of one publish attempt.
func (s *Service) record(ctx context.Context, d delivery, err error) {
	if ctx.Err() != nil && err != nil {
		return // shutting down: the attempt does not count
	}
	attempts := d.Attempts + 1
	state, next, msg := "ok", int64(0), ""
	if err != nil {
		msg = err.Error()
		var rej *nostrclient.RejectedError
		age := s.now().Sub(time.Unix(d.CreatedAt, 0))
		switch {
		case errors.As(err, &rej) && rej.Permanent():
			state = "failed"
		case age > s.cfg.GiveUpAfter:
			state = "failed"
			msg = "gave up after " + s.cfg.GiveUpAfter.String() + ": " + msg
		default:
			state = "pending"
			next = s.now().Add(s.backoff(attempts)).UnixMilli()
		}
	}
	if err := s.st.setDelivery(context.WithoutCancel(ctx), d.WrapID, d.Relay, state, attempts, next, msg); err != nil {
		s.log.Error("outbox: recording a delivery failed", "relay", d.Relay, "err", err)
		return
	}
	lvl := s.log.Debug
	if state != "ok" {
		lvl = s.log.Warn
	}
	lvl("delivery attempt", "message", d.RumorID, "relay", d.Relay, "self", d.Self, "state", state, "attempt", attempts, "err", msg)
	if !d.Self && (state == "ok" || state == "failed" || attempts == 1) {
		if m, err := s.st.message(context.WithoutCancel(ctx), d.RumorID); err == nil {
			s.notify(Event{Type: EventState, Conversation: m.Conversation, MessageID: m.ID, Message: m})
		}
	}
}

// backoff is RetryBase * 2^(attempts-1), capped at RetryMax, with ±20 % jitter.
func (s *Service) backoff(attempts int) time.Duration {
	d := s.cfg.RetryBase
	for i := 1; i < attempts && d < s.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, s.cfg.RetryMax)
	j := time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
	return j
}
