package nostrclient_test

import (
	"testing"

	"github.com/anchorchat/anchorchat/internal/nostrclient"
)

func TestHTTPURL(t *testing.T) {
	for in, want := range map[string]string{
		"ws://127.0.0.1:7447":         "http://127.0.0.1:7447",
		"wss://relay.example.com/":    "https://relay.example.com/",
		"wss://relay.example.com/sub": "https://relay.example.com/sub",
		"WSS://Relay.Example.com":     "https://Relay.Example.com",
	} {
		u, err := nostrclient.HTTPURL(in)
		if err != nil || u.String() != want {
			t.Errorf("HTTPURL(%q) = %v, %v; want %s", in, u, err, want)
		}
	}
	for _, in := range []string{"http://relay.example.com", "relay.example.com", "ws://", "wss:///path", "::"} {
		if u, err := nostrclient.HTTPURL(in); err == nil {
			t.Errorf("HTTPURL(%q) = %v, want an error", in, u)
		}
	}
}
