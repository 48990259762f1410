package chat

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/coder/websocket"

	"github.com/anchorchat/anchorchat/internal/nostrclient"
)

// Relays other people name (a contact's kind 10050 list, the relays of
// their nprofile, NIP-05 document or handle claim, SendOptions.Relays) are
// theirs to choose: dialled as given, they would make our node open
// websockets to services on our own machine or network. Unless
// AllowPrivateRelays, such a relay is dialled only at a public address
// (publicAddr, checked on the address actually dialled, after DNS and on
// every redirect, as for file downloads); the relays the user chose
// (RelayURL, InboxRelays and the relays of our own kind 10050 list,
// DiscoveryRelays, FallbackRelays) are dialled as they are.

// trustRelays marks urls as the user's own choice.
func (s *Service) trustRelays(urls ...string) {
	s.trustMu.Lock()
	defer s.trustMu.Unlock()
	for _, u := range dedupRelays(urls) {
		s.trusted[u] = true
	}
}

// dialerFor is how to dial url: Config.Dial (nil: websocket.Dial) for a
// relay the user chose, or any relay with AllowPrivateRelays; otherwise
// the guarded dialer.
func (s *Service) dialerFor(url string) nostrclient.Dialer {
	if s.cfg.AllowPrivateRelays {
		return s.cfg.Dial
	}
	s.trustMu.Lock()
	trusted := s.trusted[NormalizeRelay(url)]
	s.trustMu.Unlock()
	if trusted {
		return s.cfg.Dial
	}
	return s.guardedDial
}

// guardedDial opens a websocket to a relay someone else named, refusing
// (with an error wrapping ErrPrivateAddress) one that is not at a public
// address.
func (s *Service) guardedDial(ctx context.Context, url string) (*websocket.Conn, error) {
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: s.relayHTTP})
	if errors.Is(err, ErrPrivateAddress) {
		return nil, fmt.Errorf("refused: a relay someone else names must be at a public address (AllowPrivateRelays / --chat.allow-private-relays): %w", err)
	}
	return ws, err
}

// relayClient is the HTTP client of guardedDial: public addresses only,
// through the environment's proxy if it names one.
func relayClient() *http.Client {
	tr := publicOnlyTransport(http.ProxyFromEnvironment)
	tr.ForceAttemptHTTP2 = false // a websocket handshake is HTTP/1.1
	return &http.Client{Transport: tr}
}
