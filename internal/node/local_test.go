package node

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/anchorchat/anchorchat/chat"
	"github.com/anchorchat/anchorchat/relay"
)

// The messenger's dialer carries the node's secret to its own relay URL only,
// and the relay exempts exactly the connections that carry it.
func TestLocalClientExemptsOnlyTheMessenger(t *testing.T) {
	ctx := context.Background()
	st := tempStore(t)
	cfg := relay.DefaultConfig()
	cfg.Limits.MaxConnectionsPerIP = 1
	r := relay.New(cfg, st, slog.New(slog.DiscardHandler), nil)
	srv := httptest.NewServer(r)
	defer srv.Close()
	defer r.Close()
	own := "ws" + strings.TrimPrefix(srv.URL, "http")
	local := newLocalClient(own)
	r.Exempt = local.exempt
	r.Start()

	dial := func(url string, h http.Header) int {
		t.Helper()
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		ws, resp, err := websocket.Dial(dctx, url, &websocket.DialOptions{HTTPHeader: h})
		if err != nil {
			if resp == nil {
				t.Fatal(err)
			}
			return resp.StatusCode
		}
		t.Cleanup(func() { ws.CloseNow() })
		return 0
	}
	if s := dial(own, nil); s != 0 {
		t.Fatalf("first connection: %d", s)
	}
	if s := dial(own, nil); s != http.StatusTooManyRequests {
		t.Fatalf("second plain connection: %d, want 429", s)
	}
	if s := dial(own, http.Header{localClientHeader: {"not the secret"}}); s != http.StatusTooManyRequests {
		t.Fatalf("a wrong secret: %d, want 429", s)
	}
	for _, url := range []string{own, own + "/", own} { // the messenger normalizes what it dials
		ws, err := local.dial(ctx, url)
		if err != nil {
			t.Fatalf("the messenger's own relay: %v", err)
		}
		defer ws.CloseNow()
	}
	// The same relay under another name gets no secret: it might not be ours.
	other := strings.Replace(own, "127.0.0.1", "localhost", 1)
	if _, err := local.dial(ctx, other); err == nil || !strings.Contains(err.Error(), "429") {
		t.Fatalf("another URL: %v, want a 429 refusal (no secret sent)", err)
	}
}

// The messenger dials its own relay under the spelling chat normalizes it
// to, which drops a default port: a node listening on port 80 (RelayURL
// ws://HOST:80) is dialled as ws://HOST, and must still get the secret.
func TestLocalClientKnowsItsRelayInChatsSpelling(t *testing.T) {
	for own, dialled := range map[string]string{
		"ws://127.0.0.1:80":   "ws://127.0.0.1",
		"ws://127.0.0.1:4848": "ws://127.0.0.1:4848/",
		"ws://[::1]:80":       "ws://[::1]",
	} {
		if !newLocalClient(own).isOwn(chat.NormalizeRelay(dialled)) {
			t.Errorf("relay %s dialled as %s: no secret sent", own, chat.NormalizeRelay(dialled))
		}
	}
	for own, dialled := range map[string]string{
		"ws://127.0.0.1:80":   "ws://localhost",
		"ws://127.0.0.1:4848": "ws://127.0.0.1:4849",
		"ws://127.0.0.1:443":  "ws://127.0.0.1",
	} {
		if newLocalClient(own).isOwn(dialled) {
			t.Errorf("relay %s: the secret goes to %s too", own, dialled)
		}
	}
}
