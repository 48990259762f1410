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
	c, err := nostrclient.Dial(dctx, url, nostrclient.Options{Dial: s.cfg.Dial, Sign: s.sign})
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
	s.log.Debug("inbox subscribed", "relay", url, "stored", len(sub.Stored))
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

// authentic reports whether evt's id and signature check.
func authentic(evt *nostr.Event) bool {
	return eventsig.Valid(evt)
}

// handleWrap unwraps, deduplicates and stores one incoming gift wrap.
func (s *Service) handleWrap(ctx context.Context, relay string, wrap *nostr.Event) {
	if err := s.ingest(ctx, wrap); err != nil && ctx.Err() == nil {
		lvl := s.log.Warn
		if errors.Is(err, ErrNotForUs) || errors.Is(err, ErrExpired) {
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
	rumor, uerr := s.w.Unwrap(wrap)
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
			Tags: rumor.Tags, CreatedAt: time.Unix(int64(rumor.CreatedAt), 0), Outgoing: rumor.PubKey == s.pk,
		}
		if e := Expiration(rumor); e > 0 {
			m.ExpiresAt = time.Unix(e, 0)
		}
		if err := upsertConversation(ctx, tx, conv, parts, tagValue(rumor.Tags, "subject"), int64(rumor.CreatedAt)); err != nil {
			return fmt.Errorf("chat: ingest: %w", err)
		}
		isNew, err := insertMessage(ctx, tx, m, now)
		if err != nil {
			return fmt.Errorf("chat: ingest: %w", err)
		}
		if isNew {
			ev = &Event{Type: EventMessage, Conversation: conv, MessageID: m.ID}
		}
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
