package chat

import (
	"context"
	"errors"
	"fmt"
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
	c, release, err := s.conn(ctx, url)
	if err != nil {
		return nil, err
	}
	defer release()
	return c.Query(ctx, f)
}

// maxRelaysInFlight bounds the relays the outbox delivers to at once.
const maxRelaysInFlight = 16

// outboxBatch is how many due deliveries one pass reads.
const outboxBatch = 1024

// outboxLoop hands due deliveries to relay workers (dispatchDue) whenever
// some fall due, a message is queued or a worker finishes.
func (s *Service) outboxLoop() {
	defer s.wg.Done()
	for {
		full, err := s.dispatchDue(s.ctx)
		if err != nil && s.ctx.Err() == nil {
			s.log.Error("outbox pass failed", "err", err)
		}
		t := time.NewTimer(s.outboxWait(full))
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

// outboxWait is how long the outbox sleeps unless woken: until the next
// delivery to a relay that is not being served falls due, at most a second.
// With every worker busy it waits the second (a finishing worker wakes it).
func (s *Service) outboxWait(full bool) time.Duration {
	wait := time.Second
	if full {
		return wait
	}
	if next, err := s.st.nextDue(s.ctx, s.busyRelays()); err == nil && next > 0 {
		wait = min(wait, time.Duration(next-s.now().UnixMilli())*time.Millisecond)
	}
	return max(wait, 5*time.Millisecond)
}

// dispatchDue starts delivering what is due, one worker per relay and at
// most maxRelaysInFlight at once, without waiting for them: a relay that
// stalls holds up only its own deliveries (bounded by RelayTimeout), never
// the other relays' nor the next pass. Deliveries to a relay already being
// served wait until its worker is done. It reports whether every worker
// slot is taken.
func (s *Service) dispatchDue(ctx context.Context) (bool, error) {
	busy := s.busyRelays()
	if len(busy) >= maxRelaysInFlight {
		return true, nil
	}
	due, err := s.st.dueDeliveries(ctx, s.now().UnixMilli(), outboxBatch, busy)
	if err != nil {
		return false, err
	}
	var order []string // relays by their earliest due delivery
	byRelay := map[string][]delivery{}
	for _, d := range due {
		if byRelay[d.Relay] == nil {
			order = append(order, d.Relay)
		}
		byRelay[d.Relay] = append(byRelay[d.Relay], d)
	}
	for _, url := range order {
		if !s.startRelayWorker(url, byRelay[url]) {
			return true, nil
		}
	}
	return false, nil
}

// busyRelays lists the relays whose worker is running.
func (s *Service) busyRelays() []string {
	s.busyMu.Lock()
	defer s.busyMu.Unlock()
	out := make([]string, 0, len(s.busy))
	for u := range s.busy {
		out = append(out, u)
	}
	return out
}

// startRelayWorker delivers ds to url in the background, unless every
// worker slot is taken (it then returns false). The worker wakes the outbox
// when it is done, for what fell due at that relay meanwhile.
func (s *Service) startRelayWorker(url string, ds []delivery) bool {
	s.busyMu.Lock()
	if len(s.busy) >= maxRelaysInFlight || s.busy[url] {
		s.busyMu.Unlock()
		return false
	}
	s.busy[url] = true
	s.busyMu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.deliverTo(s.ctx, url, ds)
		s.busyMu.Lock()
		delete(s.busy, url)
		s.busyMu.Unlock()
		s.kick()
	}()
	return true
}

// deliverTo publishes ds to one relay, up to maxInFlightPerRelay at a time,
// and records each outcome. The whole attempt, dial included, is bounded by
// RelayTimeout and each publish by PublishTimeout: what is not acknowledged
// by then counts as a failed attempt and is retried later.
func (s *Service) deliverTo(ctx context.Context, url string, ds []delivery) {
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RelayTimeout)
	defer cancel()
	c, release, err := s.conn(rctx, url)
	if err != nil {
		for _, d := range ds {
			s.record(ctx, d, err)
		}
		return
	}
	defer release()
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
		acquired := false
		select {
		case sem <- struct{}{}:
			acquired = true
		case <-rctx.Done():
		}
		// Past the relay timeout nothing more is sent, even if a slot came
		// free at the same moment (select picks at random); the rest wait
		// for the next attempt. (nostrclient refuses a write whose context
		// is done, so the connection the pool shares with lookups stays.)
		if err := rctx.Err(); err != nil {
			if acquired {
				<-sem
			}
			s.record(ctx, d, fmt.Errorf("relay %s: not sent within the relay timeout (%s): %w", url, s.cfg.RelayTimeout, err))
			continue
		}
		// The dial or a free slot may have taken a while: a message deleted
		// meanwhile (here or on another device) has no deliveries any more,
		// and is not sent. If the store cannot tell, the delivery goes out.
		if pending, err := s.st.deliveryPending(rctx, d.WrapID, d.Relay); err == nil && !pending {
			<-sem
			s.log.Debug("delivery dropped before sending", "message", d.RumorID, "relay", d.Relay)
			continue
		}
		// A wrap that waited is made again, dated from now: the
		// recipient's inbox reads back only MaxBackdate (and 10 minutes)
		// before its previous connection, and a wrap dated up to
		// MaxBackdate before it was queued could fall outside that
		// window, accepted by the relay and never read.
		if s.now().Sub(time.Unix(d.CreatedAt, 0)) > rewrapAfter {
			fresh, err := s.rewrap(rctx, d)
			switch {
			case err != nil:
				s.log.Debug("could not make a waiting wrap again; sending it as it is", "message", d.RumorID, "relay", d.Relay, "err", err)
			case fresh == nil:
				<-sem
				s.log.Debug("delivery dropped before sending", "message", d.RumorID, "relay", d.Relay)
				continue
			default:
				d.WrapID, d.Wrap, evt = fresh.ID, fresh.String(), *fresh
			}
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			pctx, cancel := context.WithTimeout(rctx, s.cfg.PublishTimeout)
			err := c.Publish(pctx, &evt)
			cancel()
			if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				// No OK in time: the connection may be dead without
				// knowing it; the retry dials again.
				s.retire(url, c)
			}
			s.record(ctx, d, err)
		}()
	}
	wg.Wait()
}

// rewrapAfter is how long after it was queued a delivery's gift wrap is
// made again before each attempt (Service.rewrap). The inbox reads back 10
// minutes more than MaxBackdate, so a wrap published within 10 minutes of
// being made is always in the recipient's window.
const rewrapAfter = 5 * time.Minute

// rewrap makes d's gift wrap again, with a fresh one-time key and times
// drawn back from now, from the rumor in our own copy's wrap, and puts it
// in d's outbox row. It returns nil (and no error) if the row is no longer
// pending (deleted, expired or done meanwhile).
func (s *Service) rewrap(ctx context.Context, d delivery) (*nostr.Event, error) {
	raw, err := s.st.ownWrap(ctx, d.RumorID)
	if err != nil {
		return nil, fmt.Errorf("our own copy: %w", err)
	}
	var own nostr.Event
	if err := own.UnmarshalJSON([]byte(raw)); err != nil {
		return nil, fmt.Errorf("our own copy: %w", err)
	}
	rumor, err := s.w.Unwrap(&own)
	if err != nil {
		return nil, fmt.Errorf("our own copy: %w", err)
	}
	if rumor.ID != d.RumorID {
		return nil, fmt.Errorf("our own copy holds rumor %s, not %s", rumor.ID, d.RumorID)
	}
	wrap, err := s.w.Wrap(*rumor, d.Recipient, d.ExpiresAt)
	if err != nil {
		return nil, err
	}
	ok, err := s.st.replaceWrap(ctx, d.WrapID, d.Relay, wrap.ID, wrap.String())
	if err != nil || !ok {
		return nil, err
	}
	return &wrap, nil
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
		case errors.As(err, &rej) && rej.Permanent(), errors.Is(err, ErrPrivateAddress):
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
