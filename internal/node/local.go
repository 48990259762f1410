package node

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"net/http"

	"github.com/coder/websocket"

	"github.com/anchorchat/anchorchat/chat"
)

// localClientHeader carries the node's in-memory secret on its messenger's
// websockets to its own relay, which then does not hold them to the per-IP
// limits (relay.Relay.Exempt). The messenger dials 127.0.0.1, as does
// whatever else reaches the relay over loopback: an onion service, a local
// proxy. Without this, enough of those could lock the node out of its own
// relay.
const localClientHeader = "Anchorchat-Local-Client"

// localClient pairs the messenger's dialer with the relay's Exempt.
type localClient struct {
	url    string // the relay URL the messenger dials, normalized
	secret string // random, never written anywhere
}

func newLocalClient(url string) *localClient {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return &localClient{url: chat.NormalizeRelay(url), secret: hex.EncodeToString(b[:])}
}

// isOwn reports whether url is the node's own relay URL, in the messenger's
// spelling (which drops a default port: a relay on port 80 is dialled as
// ws://HOST).
func (l *localClient) isOwn(url string) bool {
	return chat.NormalizeRelay(url) == l.url
}

// exempt reports whether req carries the secret.
func (l *localClient) exempt(req *http.Request) bool {
	got := req.Header.Get(localClientHeader)
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(l.secret)) == 1
}

// dial is the messenger's dialer: the secret goes to the node's own relay
// URL and nowhere else.
func (l *localClient) dial(ctx context.Context, url string) (*websocket.Conn, error) {
	var opts *websocket.DialOptions
	if l.isOwn(url) {
		opts = &websocket.DialOptions{HTTPHeader: http.Header{localClientHeader: {l.secret}}}
	}
	ws, _, err := websocket.Dial(ctx, url, opts)
	return ws, err
}
