package chat

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/anchorchat/anchorchat/internal/eventsig"
	"github.com/anchorchat/anchorchat/internal/nostrclient"
	"github.com/nbd-wtf/go-nostr"
)

// inboxLoop keeps a subscription for our gift wraps open on one relay,
// re-connecting with backoff. Wraps are back-dated by up to MaxBackdate, so
// each (re)subscription asks for everything since the last successful
// connection minus that window; already-seen wraps are skipped by id.
func (s *Service) inboxLoop(url string) {
	defer s.wg.Done()
	delay := s.cfg.ReconnectDelay
	for s.ctx.Err() == nil {
		err := s.subscribeOnce(url)
		if s.ctx.Err() != nil {
			return
		}
		if err == nil {
			delay = s.cfg.ReconnectDelay
		}
		s.log.Warn("inbox subscription ended, reconnecting", "relay", url, "err", err, "in", delay)
		t := time.NewTimer(delay)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(delay*2, time.Minute)
	}
}

func (s *Service) subscribeOnce(url string) error {
	ctx := s.ctx
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	c, err := nostrclient.Dial(dctx, url, nostrclient.Options{Dial: s.dialerFor(url), Sign: s.sign})
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()
	cursor, err := s.st.cursor(ctx, url)
	if err != nil {
		return err
	}
	connectedAt := s.now().Unix()
	f := nostr.Filter{Kinds: []int{KindGiftWrap}, Tags: nostr.TagMap{"p": {s.pk}}}
	if cursor > 0 {
		since := nostr.Timestamp(cursor - int64(MaxBackdate/time.Second) - 600)
		f.Since = &since
	}
	read, err := s.catchUp(ctx, c, url, f)
	if err != nil {
		return err
	}
	// The subscription's stored events are the newest again (already
	// seen, but they cover what arrived while catching up); live ones follow.
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	sub, err := c.Subscribe(sctx, f)
	cancel()
	if err != nil {
		return err
	}
	for _, e := range sub.Stored {
		s.handleWrap(ctx, url, e)
	}
	if err := s.st.setCursor(ctx, url, connectedAt); err != nil {
		return err
	}
	s.log.Debug("inbox subscribed", "relay", url, "caught_up", read, "stored", len(sub.Stored))
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.Done():
			return c.Err()
		case <-sub.Ended():
			return fmt.Errorf("relay %s ended the inbox subscription: %s", url, sub.Reason())
		case e := <-sub.Events():
			s.handleWrap(ctx, url, e)
		}
	}
}

// inboxPage is the limit each catch-up REQ asks for; a relay may answer
// fewer (its own cap), which paging copes with.
const inboxPage = 500

// maxInboxPages bounds one catch-up (a relay can make up endless signed
// wraps): a longer one ends in an error, the cursor does not move, and the
// next connection starts over, skipping what it has seen.
const maxInboxPages = 2000

// catchUp reads every stored wrap matching f (our wraps since the cursor's
// window), newest first, page by page. A relay answers one REQ with at
// most its own limit of events (this relay's default is 500), so a single
// REQ after a long absence would leave the older ones unread, and the
// cursor then moves past them for good.
//
// Each page asks for until = the oldest created_at of the page before, so
// that wraps sharing that second are not skipped; those seen at that second
// are not counted as new. A page with nothing new means the relay had no
// more at that second than it sent: the next page starts one second below,
// and an empty page ends the catch-up. It returns the number of wraps read.
func (s *Service) catchUp(ctx context.Context, c *nostrclient.Conn, url string, f nostr.Filter) (int, error) {
	f.Limit = inboxPage
	var atUntil map[string]bool // ids seen at *f.Until
	read := 0
	for range maxInboxPages {
		qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		evs, err := c.Query(qctx, f)
		cancel()
		if err != nil {
			return read, err
		}
		if len(evs) == 0 {
			return read, nil
		}
		fresh := 0
		oldest := evs[0].CreatedAt
		for _, e := range evs {
			if atUntil[e.ID] {
				continue
			}
			fresh++
			oldest = min(oldest, e.CreatedAt)
			s.handleWrap(ctx, url, e)
		}
		read += fresh
		if ctx.Err() != nil {
			return read, ctx.Err()
		}
		if fresh == 0 {
			// Every event of the page was at *f.Until and seen: go below it.
			if f.Until == nil || (f.Since != nil && *f.Until <= *f.Since) || *f.Until == 0 {
				return read, nil
			}
			until := *f.Until - 1
			f.Until, atUntil = &until, nil
			continue
		}
		if atUntil == nil || oldest < *f.Until {
			atUntil = map[string]bool{} // a new second
		}
		for _, e := range evs {
			if e.CreatedAt == oldest {
				atUntil[e.ID] = true
			}
		}
		until := oldest
		f.Until = &until
	}
	return read, fmt.Errorf("relay %s: more than %d pages of gift wraps in one catch-up; the rest are read on the next connection", url, maxInboxPages)
}

// checkParticipants refuses a rumor naming more than MaxParticipants in
// all: its author and more than MaxParticipants-1 p tags (counted as sent,
// valid or not, so that neither repeats nor junk make a huge rumor pass).
func checkParticipants(rumor *nostr.Event) error {
	n := 0
	for range rumor.Tags.FindAll("p") {
		n++
	}
	if n > MaxParticipants-1 {
		return fmt.Errorf("%w: %d p tags", ErrTooManyParticipants, n)
	}
	return nil
}

// createdAt is when a received rumor counts as written (unix seconds): its
// created_at, unless that is more than MaxFutureSkew ahead of now (the
// moment it arrived), which is then taken instead.
func (s *Service) createdAt(rumor *nostr.Event, now int64) int64 {
	at := int64(rumor.CreatedAt)
	if at > now+int64(MaxFutureSkew/time.Second) {
		s.log.Debug("rumor dated in the future, stored as received now", "id", rumor.ID, "from", rumor.PubKey, "created_at", at, "now", now)
		return now
	}
	return at
}

// authentic reports whether evt's id and signature check.
func authentic(evt *nostr.Event) bool {
	return eventsig.Valid(evt)
}

// handleWrap unwraps, deduplicates and stores one incoming gift wrap.
func (s *Service) handleWrap(ctx context.Context, relay string, wrap *nostr.Event) {
	if err := s.ingest(ctx, wrap); err != nil && ctx.Err() == nil {
		lvl := s.log.Warn
		if errors.Is(err, ErrNotForUs) || errors.Is(err, ErrExpired) || errors.Is(err, ErrTooManyParticipants) {
			lvl = s.log.Debug
		}
		lvl("gift wrap refused", "relay", relay, "wrap", wrap.ID, "err", err)
	}
}

// Ingest processes one gift wrap as if it had arrived from a relay (the
// node may feed wraps its own relay stores directly). Refused wraps return
// the Unwrap error (ErrNotForUs, ErrImpersonation, ErrMalformed, ErrExpired).
func (s *Service) Ingest(ctx context.Context, wrap *nostr.Event) error { return s.ingest(ctx, wrap) }

func (s *Service) ingest(ctx context.Context, wrap *nostr.Event) error {
	seen, err := s.st.seen(ctx, wrap.ID)
	if err != nil {
		return fmt.Errorf("chat: seen: %w", err)
	}
	if seen {
		return nil
	}
	now := s.now().Unix()
	rumor, exp, uerr := s.w.UnwrapExpiring(wrap)
	if uerr != nil {
		if errors.Is(uerr, ErrNotForUs) {
			return uerr // not ours: do not even remember it
		}
		if !authentic(wrap) {
			// A copy whose id or signature does not check says nothing
			// about the wrap that id names: remembering the id would make
			// us ignore the genuine wrap when another relay delivers it.
			return uerr
		}
		if err := markSeen(ctx, s.st.db, wrap.ID, now); err != nil {
			return err
		}
		return uerr
	}
	if err := checkParticipants(rumor); err != nil {
		if merr := markSeen(ctx, s.st.db, wrap.ID, now); merr != nil {
			return merr
		}
		return fmt.Errorf("rumor %s from %s dropped: %w", rumor.ID, rumor.PubKey, err)
	}
	created := s.createdAt(rumor, now)
	tx, err := s.st.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("chat: ingest: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := markSeen(ctx, tx, wrap.ID, now); err != nil {
		return fmt.Errorf("chat: ingest: %w", err)
	}
	var ev *Event
	switch rumor.Kind {
	case KindChatMessage, KindFileMessage, KindTipRequest, KindTipInvoice, KindTipReceipt, KindTipStatus:
		parts := participantsOf(rumor)
		conv := ConversationID(parts)
		m := &Message{
			ID: rumor.ID, Conversation: conv, Sender: rumor.PubKey, Kind: rumor.Kind, Content: rumor.Content,
			Tags: rumor.Tags, CreatedAt: time.Unix(created, 0), Outgoing: rumor.PubKey == s.pk,
		}
		if exp > 0 {
			m.ExpiresAt = time.Unix(exp, 0)
		}
		isNew, err := insertMessage(ctx, tx, m, now)
		if err != nil {
			return fmt.Errorf("chat: ingest: %w", err)
		}
		if !isNew {
			// Known, or deleted by its sender (the deletion may arrive
			// first): a refused copy must not name or create the room.
			break
		}
		if err := upsertConversation(ctx, tx, conv, parts, tagValue(rumor.Tags, "subject"), created); err != nil {
			return fmt.Errorf("chat: ingest: %w", err)
		}
		if tagValue(rumor.Tags, "subject") != "" {
			// Wraps arrive in any order (a catch-up reads newest first):
			// the subject is the newest message's, not the last to arrive.
			if err := resetSubject(ctx, tx, conv); err != nil {
				return fmt.Errorf("chat: ingest: %w", err)
			}
		}
		ev = &Event{Type: EventMessage, Conversation: conv, MessageID: m.ID}
	case KindDeletion:
		for t := range rumor.Tags.FindAll("e") {
			conv, removed, err := deleteMessage(ctx, tx, t[1], rumor.PubKey, now)
			if err != nil {
				return fmt.Errorf("chat: ingest deletion: %w", err)
			}
			if removed {
				ev = &Event{Type: EventDeleted, Conversation: conv, MessageID: t[1]}
				s.log.Info("message deleted by its sender", "id", t[1], "conversation", conv)
			}
		}
	default:
		s.log.Debug("ignoring rumor kind", "kind", rumor.Kind, "wrap", wrap.ID)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("chat: ingest: %w", err)
	}
	if ev != nil {
		if ev.Type == EventDeleted {
			s.afterRemoval(ctx)
		}
		if ev.Type == EventMessage {
			m, err := s.st.message(ctx, ev.MessageID)
			if err == nil {
				ev.Message = m
			}
			s.log.Info("message received", "id", ev.MessageID, "kind", rumor.Kind, "from", rumor.PubKey, "conversation", ev.Conversation)
			if rumor.PubKey != s.pk {
				s.learnSender(rumor.PubKey)
			}
			if h := s.handler(rumor.Kind); h != nil && ev.Message != nil {
				h(ctx, ev.Message)
			}
		}
		s.notify(*ev)
	}
	return nil
}
