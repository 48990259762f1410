package chat

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// fuzzSeeds are rumors as a sender could seal them: the kinds the inbox
// stores, a deletion, odd tags, and texts that are not events at all.
func fuzzSeeds(f *testing.F, sender *Wrapper, recipient string) {
	now := time.Now()
	for _, r := range []nostr.Event{
		sender.NewRumor(KindChatMessage, "hi", nostr.Tags{{"p", recipient}, {"subject", "s"}}, now),
		sender.NewRumor(KindFileMessage, "https://files.example/abc", nostr.Tags{{"p", recipient}, {"file-type", "image/png"},
			{"encryption-algorithm", "aes-gcm"}, {"decryption-key", "00"}, {"decryption-nonce", "00"}, {"x", "00"}, {"size", "-1"}}, now),
		sender.NewRumor(KindDeletion, "", nostr.Tags{{"e", "00"}, {"p", recipient}}, now),
		sender.NewRumor(KindTipRequest, "", nostr.Tags{{"p", recipient}, {"amount", "1000"}}, now),
		sender.NewRumor(KindChatMessage, "", nostr.Tags{{"p"}, {}, {"p", recipient, "", ""}, {"expiration", "1"}, {"e", "x", "y"}}, now),
		sender.NewRumor(KindChatMessage, "later", nostr.Tags{{"p", recipient}}, now.Add(1000*time.Hour)),
	} {
		f.Add(r.String())
	}
	for _, s := range []string{``, `null`, `{}`, `[]`, `{"kind":14,"tags":[["p",1]]}`, `{"kind":14,"tags":null,"pubkey":"` + sender.PublicKey() + `"}`,
		`{"kind":14,"content":"\ud800","pubkey":"` + sender.PublicKey() + `","tags":[["p","` + recipient + `"]],"created_at":-1}`} {
		f.Add(s)
	}
}

// FuzzUnwrapRumor seals whatever the fuzzer makes up as the rumor, gift-wraps
// it properly, and unwraps it: no panic, and a rumor that comes out is by the
// seal's signer, with its id computed.
func FuzzUnwrapRumor(f *testing.F) {
	sender, err := NewWrapper(nostr.GeneratePrivateKey())
	if err != nil {
		f.Fatal(err)
	}
	recipient, err := NewWrapper(nostr.GeneratePrivateKey())
	if err != nil {
		f.Fatal(err)
	}
	fuzzSeeds(f, sender, recipient.PublicKey())
	f.Fuzz(func(t *testing.T, rumorJSON string) {
		wrap, err := sender.wrapRumorJSON(rumorJSON, recipient.PublicKey(), 0)
		if err != nil {
			t.Skip(err) // nip44 refuses an empty or oversized plaintext
		}
		rumor, err := recipient.Unwrap(&wrap)
		var claimed nostr.Event
		if json.Unmarshal([]byte(rumorJSON), &claimed) == nil && claimed.PubKey != sender.PublicKey() && !errors.Is(err, ErrImpersonation) {
			t.Fatalf("a rumor claiming %q inside %s's seal: %v, want ErrImpersonation", claimed.PubKey, sender.PublicKey(), err)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrImpersonation) && !errors.Is(err, ErrExpired) {
				t.Fatalf("unwrap: %v, want a refusal wrapping ErrMalformed, ErrImpersonation or ErrExpired", err)
			}
			return
		}
		if rumor.PubKey != sender.PublicKey() || rumor.ID != rumor.GetID() || rumor.Sig != "" || rumor.Tags == nil {
			t.Fatalf("unwrapped rumor %+v: want by %s, id computed, no sig, tags not nil", rumor, sender.PublicKey())
		}
	})
}

// FuzzIngestRumor feeds a made-up rumor, properly sealed and wrapped, to a
// messenger's inbox (its real SQLite store): whatever it says, ingesting
// it neither panics nor leaves the store unreadable, and a rumor the seal's
// signer did not write is refused.
func FuzzIngestRumor(f *testing.F) {
	senderKey, recipientKey := newKey(f), newKey(f)
	senderHex, err := senderKey.SecretHex()
	if err != nil {
		f.Fatal(err)
	}
	sender, err := NewWrapper(senderHex)
	if err != nil {
		f.Fatal(err)
	}
	svc, err := New(Config{Key: recipientKey, RelayURL: "ws://127.0.0.1:1", DBPath: filepath.Join(f.TempDir(), "chat.db"), Logger: testLogger(f)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = svc.Close() })
	fuzzSeeds(f, sender, recipientKey.PublicKey())
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, rumorJSON string) {
		wrap, err := sender.wrapRumorJSON(rumorJSON, recipientKey.PublicKey(), 0)
		if err != nil {
			t.Skip(err)
		}
		err = svc.Ingest(ctx, &wrap)
		var claimed nostr.Event
		if json.Unmarshal([]byte(rumorJSON), &claimed) == nil && claimed.PubKey != sender.PublicKey() && !errors.Is(err, ErrImpersonation) {
			t.Fatalf("a rumor claiming %q inside %s's seal: %v, want ErrImpersonation", claimed.PubKey, sender.PublicKey(), err)
		}
		convs, err := svc.Conversations(ctx)
		if err != nil {
			t.Fatalf("conversations after ingesting %q: %v", rumorJSON, err)
		}
		for _, c := range convs {
			if _, err := svc.History(ctx, c.ID, HistoryOptions{Limit: 5}); err != nil {
				t.Fatalf("history of %s after ingesting %q: %v", c.ID, rumorJSON, err)
			}
		}
	})
}
