package nostrclient

import (
	"fmt"
	"net/url"
)

// HTTPURL is the http(s) URL of a relay's websocket URL: the same host,
// port and path with ws:// as http:// and wss:// as https://, where the
// relay serves its NIP-11 document (and this project's node its HTTP API
// and blobs). Any other scheme is an error.
func HTTPURL(wsURL string) (*url.URL, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return nil, fmt.Errorf("relay URL: %w", err)
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	default:
		return nil, fmt.Errorf("%q is not a ws:// or wss:// URL", wsURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%q has no host", wsURL)
	}
	return u, nil
}
