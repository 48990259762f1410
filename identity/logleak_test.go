package identity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbd-wtf/go-nostr"
)

// TestLogsNeverCarrySecrets routes text and JSON slog handlers into buffers
// through keystore create, failed and good unlock, passphrase change,
// signing, claim building and direct logging of the key, and checks that no
// secret hex, nsec, passphrase or ncryptsec appears in them.
func TestLogsNeverCarrySecrets(t *testing.T) {
	for _, kind := range []string{"text", "json"} {
		t.Run(kind, func(t *testing.T) {
			var buf bytes.Buffer
			opts := &slog.HandlerOptions{Level: slog.LevelDebug}
			var h slog.Handler = slog.NewTextHandler(&buf, opts)
			if kind == "json" {
				h = slog.NewJSONHandler(&buf, opts)
			}
			log := slog.New(h)
			ctx := context.Background()
			const pass1 = "harbor velvet 31 orbit tumble"
			const pass2 = "sparrow lantern 77 quietly fold"

			ks := &Keystore{Path: filepath.Join(t.TempDir(), "identity.json"), LogN: testLogN, Logger: log}
			key, err := GenerateKey()
			if err != nil {
				t.Fatal(err)
			}
			if err := ks.Create(ctx, key, pass1); err != nil {
				t.Fatal(err)
			}
			if _, err := ks.Unlock(ctx, "wrong "+pass1); !errors.Is(err, ErrWrongPassphrase) {
				t.Fatal(err)
			} else {
				log.Error("unlock failed", "err", err)
			}
			k, err := ks.Unlock(ctx, pass1)
			if err != nil {
				t.Fatal(err)
			}
			nc1, _ := ks.Ncryptsec()
			if err := ks.ChangePassphrase(ctx, pass1, pass2); err != nil {
				t.Fatal(err)
			}
			nc2, _ := ks.Ncryptsec()
			if err := ks.ChangePassphrase(ctx, pass1, pass2); err != nil {
				log.Error("passwd failed", "err", err)
			}
			if err := ks.Create(ctx, k, pass1); err != nil {
				log.Error("init failed", "err", err)
			}

			evt := &nostr.Event{Kind: 1, Content: "hello", CreatedAt: nostr.Now()}
			if err := k.SignEvent(ctx, evt); err != nil {
				t.Fatal(err)
			}
			claim, err := NewClaim(k, ClaimParams{Handle: "alice"})
			if err != nil {
				t.Fatal(err)
			}
			log.Info("signed", "event", evt.ID, "claim", claim.ID)
			log.Info("key", slog.Any("key", k))
			log.Info("key value", "key", *k, "keyptr", k)
			log.Debug("formatted", "v", fmt.Sprintf("%v %+v %#v %s %x", k, k, k, k, k))
			log.Info("group", slog.Group("id", slog.Any("key", k)))
			log.With("key", k).Warn("with")
			// A passphrase from a file or the environment is not logged either.
			_, _, _ = ReadPassphrase(ctx, PassphraseOptions{Logger: log, LookupEnv: func(string) (string, bool) { return pass1, true }})

			secHex, _ := k.SecretHex()
			nsec, _ := k.Nsec()
			out := buf.String()
			if !strings.Contains(out, k.Npub()) {
				t.Fatalf("log does not even show the npub; is it captured?\n%s", out)
			}
			for name, secret := range map[string]string{
				"secret hex": secHex, "secret HEX": strings.ToUpper(secHex), "nsec": nsec,
				"passphrase 1": pass1, "passphrase 2": pass2,
				"ncryptsec (first)": nc1, "ncryptsec (second)": nc2, "ncryptsec prefix": "ncryptsec1",
			} {
				if strings.Contains(out, secret) {
					t.Errorf("%s found in %s logs", name, kind)
				}
			}
			if t.Failed() {
				t.Logf("logs:\n%s", out)
			}
		})
	}
}
