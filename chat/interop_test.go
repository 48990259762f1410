package chat

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

var npmOnce sync.Once
var npmErr error

// interopDir holds package.json + package-lock.json pinning nostr-tools
// (an exact version) and interop.mjs, the driver.
func nodeInterop(t *testing.T, req any) []byte {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node not in PATH")
	}
	if _, err := exec.LookPath("npm"); err != nil {
		t.Skip("npm not in PATH")
	}
	dir, _ := filepath.Abs(filepath.Join("testdata", "interop"))
	npmOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			npmErr = err
			t.Logf("npm ci: %s", out)
		}
	})
	if npmErr != nil {
		t.Fatalf("npm ci: %v", npmErr)
	}
	in, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "interop.mjs")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node interop.mjs: %v: %s", err, stderr.String())
	}
	return out
}

// A DM wrapped by nostr-tools (nip17.wrapEvent) is unwrapped by anchorchat
// to the same text and sender; a DM wrapped by anchorchat is unwrapped by
// nostr-tools (nip17.unwrapEvent) to the same text.
func TestInteropNostrTools(t *testing.T) {
	alice, bob := wrapper(t), wrapper(t)
	const text = "héllo from nostr-tools ✓ — 100% interop"

	out := nodeInterop(t, map[string]string{"op": "wrap", "sender_sk": alice.sk, "recipient_pk": bob.PublicKey(), "text": text})
	var wrap nostr.Event
	if err := json.Unmarshal(out, &wrap); err != nil {
		t.Fatalf("nostr-tools output: %v: %s", err, out)
	}
	rumor, err := bob.Unwrap(&wrap)
	if err != nil {
		t.Fatal(err)
	}
	if rumor.Content != text || rumor.PubKey != alice.PublicKey() || rumor.Kind != KindChatMessage {
		t.Fatalf("rumor from nostr-tools: %+v", rumor)
	}
	if rumor.Tags.FindWithValue("p", bob.PublicKey()) == nil {
		t.Fatal("nostr-tools rumor lacks the p tag")
	}

	const reply = "and back from anchorchat ✓"
	exp := time.Now().Add(time.Hour).Unix()
	r := bob.NewRumor(KindChatMessage, reply, nostr.Tags{{"p", alice.PublicKey()}, expirationTag(exp)}, time.Now())
	gw, err := bob.Wrap(r, alice.PublicKey(), exp)
	if err != nil {
		t.Fatal(err)
	}
	out = nodeInterop(t, map[string]any{"op": "unwrap", "recipient_sk": alice.sk, "wrap": gw})
	var got nostr.Event
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("nostr-tools output: %v: %s", err, out)
	}
	if got.Content != reply || got.PubKey != bob.PublicKey() || got.ID != r.ID {
		t.Fatalf("nostr-tools unwrapped %+v", got)
	}
}
