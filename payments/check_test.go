package payments

import (
	"github.com/nbd-wtf/go-nostr"

	"strings"
	"testing"
	"time"
)

func TestCheckInvoice(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	e := &Engine{cfg: Config{MinExpiryLeft: 30 * time.Second}, now: func() time.Time { return now }}
	req := strings.Repeat("ab", 32)
	node := "02" + strings.Repeat("11", 32)
	tip := &Tip{AmountMsat: 1_000_000, RequestID: req, PeerLNNode: node}
	good := func() *PayReq {
		return &PayReq{Destination: node, AmountMsat: 1_000_000, DescriptionHash: req, Timestamp: now, Expiry: time.Hour}
	}
	if err := e.checkInvoice(tip, good()); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		mod  func(*PayReq)
		want string
	}{
		{"more than asked", func(p *PayReq) { p.AmountMsat = 2_000_000 }, "refused: the invoice asks for 2000 sat, the tip is 1000 sat"},
		{"less than asked", func(p *PayReq) { p.AmountMsat = 999_999 }, "asks for 999999 msat"},
		{"no amount", func(p *PayReq) { p.AmountMsat = 0 }, "no amount"},
		{"other request", func(p *PayReq) { p.DescriptionHash = strings.Repeat("cd", 32) }, "does not commit to this tip request"},
		{"no description hash", func(p *PayReq) { p.DescriptionHash = "" }, "does not commit"},
		{"other payee", func(p *PayReq) { p.Destination = "03" + strings.Repeat("22", 32) }, "the invoice pays node 03"},
		{"expired", func(p *PayReq) { p.Timestamp = now.Add(-2 * time.Hour) }, "refused: the invoice expired"},
		{"about to expire", func(p *PayReq) { p.Expiry = 10 * time.Second }, "expired"},
	}
	for _, c := range cases {
		p := good()
		c.mod(p)
		err := e.checkInvoice(tip, p)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
	}
	// Without a claimed node any payee passes the payee check.
	anyNode := *tip
	anyNode.PeerLNNode = ""
	p := good()
	p.Destination = "03" + strings.Repeat("22", 32)
	if err := e.checkInvoice(&anyNode, p); err != nil {
		t.Fatal(err)
	}
}

func TestParseAmount(t *testing.T) {
	for v, ok := range map[string]bool{"1000": true, "1": true, "0": false, "-5": false, "01": false, "1e3": false, "": false, "+7": false} {
		_, err := parseAmount(nostr.Tags{{"amount", v}})
		if (err == nil) != ok {
			t.Errorf("%q: %v", v, err)
		}
	}
}
