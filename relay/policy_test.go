package relay_test

import (
	"strings"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/relay"
)

func TestPersonalRelayPolicy(t *testing.T) {
	friend, stranger := newKey(t), newKey(t)
	e := newEnv(t, func(cfg *relay.Config) { cfg.Allow = []string{friend.pk} })
	c := e.dial()
	c.mustPublish(e.event(e.owner, 1, "owner"))
	c.mustPublish(e.event(e.owner, 30023, "owner article", nostr.Tag{"d", "x"}))
	c.mustPublish(e.event(friend, 1, "allowlisted"))
	c.refused(e.event(stranger, 1, "spam"), "restricted:")
	c.refused(e.event(stranger, 0, `{"name":"squatter"}`), "restricted:")
	// The inbox: anyone may deliver a gift wrap to the owner or the allowlist...
	c.mustPublish(e.event(newKey(t), 1059, "mail", nostr.Tag{"p", e.owner.pk}))
	c.mustPublish(e.event(newKey(t), 1059, "mail", nostr.Tag{"p", friend.pk}))
	// ...but not to anybody else, and a seal is not a wrap.
	c.refused(e.event(newKey(t), 1059, "mail", nostr.Tag{"p", stranger.pk}), "restricted:")
	c.refused(e.event(stranger, 13, "seal", nostr.Tag{"p", e.owner.pk}), "restricted:")

	open := newEnv(t, func(cfg *relay.Config) { cfg.Open = true })
	oc := open.dial()
	oc.mustPublish(open.event(stranger, 1, "open relay"))
}

func TestRateLimits(t *testing.T) {
	t.Run("per IP", func(t *testing.T) {
		e := newEnv(t, func(cfg *relay.Config) {
			cfg.Limits.EventsPerSecondPerIP, cfg.Limits.EventBurstPerIP = 0.001, 3
		})
		c := e.dial()
		for i := 0; i < 3; i++ {
			c.mustPublish(e.event(e.owner, 1, "burst"))
		}
		c.refused(e.event(e.owner, 1, "one too many"), "rate-limited:")
		// Another connection from the same IP shares the bucket.
		e.dial().refused(e.event(e.owner, 1, "still too many"), "rate-limited:")
		e.clock.Add(time.Hour)
		c.mustPublish(e.event(e.owner, 1, "refilled"))
	})
	t.Run("per pubkey", func(t *testing.T) {
		e := newEnv(t, func(cfg *relay.Config) {
			cfg.Limits.EventsPerSecondPerPubkey, cfg.Limits.EventBurstPerPubkey = 0.001, 2
		})
		c := e.dial()
		sender := newKey(t)
		wrap := func() *nostr.Event { return e.event(sender, 1059, "mail", nostr.Tag{"p", e.owner.pk}) }
		c.mustPublish(wrap())
		c.mustPublish(wrap())
		c.refused(wrap(), "rate-limited:")
		c.mustPublish(e.event(newKey(t), 1059, "another sender", nostr.Tag{"p", e.owner.pk}))
		for i := 0; i < 5; i++ { // the owner is not limited per pubkey
			c.mustPublish(e.event(e.owner, 1, "owner"))
		}
	})
	t.Run("REQ per IP", func(t *testing.T) {
		e := newEnv(t, func(cfg *relay.Config) { cfg.Limits.ReqsPerSecondPerIP, cfg.Limits.ReqBurstPerIP = 0.001, 2 })
		c := e.dial()
		c.req("a", map[string]any{})
		c.req("b", map[string]any{})
		if msg := c.closed("REQ", "c", map[string]any{}); !strings.HasPrefix(msg, "rate-limited:") {
			t.Fatalf("third REQ: %q", msg)
		}
	})
}

func TestCreatedAtLimits(t *testing.T) {
	e := newEnv(t, func(cfg *relay.Config) { cfg.Limits.MaxPastAge = time.Hour })
	c := e.dial()
	future := e.event(e.owner, 1, "from the future")
	future.CreatedAt += 3600
	sign(t, future, e.owner)
	c.refused(future, "invalid:")

	old := e.event(e.owner, 1, "too old")
	old.CreatedAt -= 2 * 3600
	sign(t, old, e.owner)
	c.refused(old, "invalid:")

	// NIP-59 back-dates gift wraps up to two days: accepted.
	k := newKey(t)
	wrap := e.event(k, 1059, "back-dated", nostr.Tag{"p", e.owner.pk})
	wrap.CreatedAt -= 2*24*3600 - 60
	sign(t, wrap, k)
	c.mustPublish(wrap)
}

func sign(t *testing.T, evt *nostr.Event, k keypair) {
	t.Helper()
	if err := evt.Sign(k.sk); err != nil {
		t.Fatal(err)
	}
}
