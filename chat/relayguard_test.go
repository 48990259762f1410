package chat

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/anchorchat/anchorchat/identity"
)

// TestRelaysOthersNameAreGuarded: bob's kind 10050 list names relays on
// alice's loopback (by IP and by a name that resolves there), and carol's
// nprofile names one as her relay hint. By default alice's node connects
// to none of them: the lookup on carol's hint and every delivery are
// refused, the messages fail at once naming the reason, and the servers
// behind those addresses see no connection. The relays alice chose (her
// own, her discovery relay) are on loopback too and work. With
// AllowPrivateRelays, bob's list is used as it is. Before, a contact could
// make the node open websockets to any address.
func TestRelaysOthersNameAreGuarded(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	alice, bob, carol := newUser(t, clk, "alice"), newUser(t, clk, "bob"), newUser(t, clk, "carol")
	bobDM := startProxy(t, bob.relay.Addr)
	bobByName := "ws://localhost:" + bobDM.url[strings.LastIndex(bobDM.url, ":")+1:]
	bob.publishDMRelays(t, bob.relay.url, bobDM.url, bobByName)
	carolHint := startProxy(t, carol.relay.Addr)
	carolProfile, err := identity.EncodeNprofile(carol.key.PublicKey(), []string{carolHint.url})
	if err != nil {
		t.Fatal(err)
	}

	as := alice.start(t, func(c *Config) { c.DiscoveryRelays = []string{bob.relay.url} })
	m, err := as.Send(ctx, []string{bob.key.PublicKey()}, "hi bob", SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	failed, err := as.WaitSent(ctxT(t, 10*time.Second), m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if failed.State != StateFailed || failed.Delivery.Failed != 2 || !strings.Contains(failed.Status(), "not a public address") {
		t.Fatalf("to bob's loopback relays: %s, want failed for both as not public", failed.Status())
	}
	mc, err := as.Send(ctx, []string{carolProfile}, "hi carol", SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := as.WaitSent(ctxT(t, 10*time.Second), mc.ID); err != nil || got.State != StateFailed || !strings.Contains(got.Status(), "not a public address") {
		t.Fatalf("to carol's loopback hint: %+v (%v)", got, err)
	}
	for name, p := range map[string]*tcpProxy{"bob's DM relay": bobDM, "carol's relay hint": carolHint} {
		if total, _ := p.counts(); total != 0 {
			t.Errorf("%s saw %d connections", name, total)
		}
	}
	// Her own copies go out on their own (WaitSent waits for the others).
	eventually(t, 10*time.Second, "alice's own relay to hold her 2 copies", func() (bool, error) {
		n := len(alice.relay.wraps(t, alice.key.PublicKey()))
		return n == 2, fmt.Errorf("%d copies", n)
	})
	if err := as.Close(); err != nil {
		t.Fatal(err)
	}

	as2 := alice.start(t, func(c *Config) { c.AllowPrivateRelays = true })
	m2, err := as2.Send(ctx, []string{bob.key.PublicKey()}, "hi again", SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sent, err := as2.WaitSent(ctxT(t, 10*time.Second), m2.ID); err != nil || sent.State != StateSent {
		t.Fatalf("with AllowPrivateRelays: %+v (%v)", sent, err)
	}
	eventually(t, 10*time.Second, "both of bob's relay addresses to acknowledge", func() (bool, error) {
		m, err := as2.Message(ctx, m2.ID)
		return err == nil && m.Delivery.Acked == 2, err
	})
	if total, _ := bobDM.counts(); total == 0 {
		t.Error("with AllowPrivateRelays, bob's DM relay saw no connection")
	}
}

// A relay the user chose is trusted however someone else spells it: alice
// names bob's loopback relay as a discovery relay in capitals, with a
// trailing slash; bob's kind 10050 list names it in lower case. Before,
// the two spellings were two relays, and alice's message to bob was
// refused as going to a private address she had not chosen.
func TestChosenRelayTrustedInAnySpelling(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	alice, bob := newUser(t, clk, "alice"), newUser(t, clk, "bob")
	bob.publishDMRelays(t, bob.relay.url, bob.relay.url)
	shouted := "WS://" + strings.ToUpper(strings.TrimPrefix(bob.relay.url, "ws://")) + "/"
	as := alice.start(t, func(c *Config) { c.DiscoveryRelays = []string{shouted} })
	m, err := as.Send(ctx, []string{bob.key.PublicKey()}, "hi bob", SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sent, err := as.WaitSent(ctxT(t, 10*time.Second), m.ID); err != nil || sent.State != StateSent {
		t.Fatalf("to bob's relay, chosen by alice as %q: %s (%v)", shouted, sent.Status(), err)
	}
}

func TestNormalizeRelay(t *testing.T) {
	for in, want := range map[string]string{
		"wss://relay.example.com":           "wss://relay.example.com",
		"WSS://Relay.Example.com:443/":      "wss://relay.example.com",
		"Wss://relay.example.com:4430":      "wss://relay.example.com:4430",
		"ws://relay.example.com:80/inbox/":  "ws://relay.example.com/inbox",
		"ws://relay.example.com:443":        "ws://relay.example.com:443",
		"wss://relay.example.com:80":        "wss://relay.example.com:80",
		"HTTPS://relay.example.com:443/x?y": "wss://relay.example.com/x?y",
		"wss://[::1]:443":                   "wss://[::1]",
		"wss://relay.example.com:1443":      "wss://relay.example.com:1443",
		"":                                  "",
	} {
		if got := NormalizeRelay(in); got != want {
			t.Errorf("NormalizeRelay(%q) = %q, want %q", in, got, want)
		}
	}
}
