package spectest

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/nbd-wtf/go-nostr"
	"golang.org/x/text/unicode/norm"

	"github.com/anchorchat/anchorchat/identity"
)

// specValidHandle: "1 to 32 bytes from a-z, 0-9, _, -, .; it does not start
// or end with . and has no ..".
func specValidHandle(h string) bool {
	if len(h) < 1 || len(h) > 32 || h[0] == '.' || h[len(h)-1] == '.' || strings.Contains(h, "..") {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// specNormalize: "trim whitespace, apply Unicode NFKC, strip one leading @,
// lowercase A–Z; anything still non-ASCII is refused".
func specNormalize(s string) (string, error) {
	s = strings.TrimSpace(s)
	s = norm.NFKC.String(s)
	s = strings.TrimPrefix(s, "@")
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'A' && r <= 'Z':
			b.WriteRune(r + ('a' - 'A'))
		case r >= 0x80:
			return "", errors.New("non-ASCII")
		default:
			b.WriteRune(r)
		}
	}
	if !specValidHandle(b.String()) {
		return "", errors.New("not canonical")
	}
	return b.String(), nil
}

func TestHandleSyntax(t *testing.T) {
	for _, h := range []string{"a", "alice", "a.b", "a..b", ".a", "a.", "A", "al ice", "a_b-c.d", "0", "-", "_",
		strings.Repeat("a", 32), strings.Repeat("a", 33), "é", "a@b", "@a", ""} {
		if got, want := identity.ValidateHandle(h) == nil, specValidHandle(h); got != want {
			t.Errorf("%q: identity valid %v, spec %v", h, got, want)
		}
	}
	for _, in := range []string{" @Alice ", "@@alice", "ＡＬＩＣＥ", "\u0130", "ﬁsh", "alice\u200b", "\u00a0alice", "\u3000@bob",
		"＠alice", "@ alice", "Bob.Smith", "@", "a\u0301", "\u212a", "ß", "@" + strings.Repeat("x", 32), "\talice\n"} {
		got, gerr := identity.NormalizeHandle(in)
		want, werr := specNormalize(in)
		if (gerr == nil) != (werr == nil) || got != want {
			t.Errorf("%q: identity %q %v, spec %q %v", in, got, gerr, want, werr)
		}
	}
}

// specRelayURL: "ws:// or wss:// URL with a host and no user info, at most
// 256 bytes".
func specRelayURL(s string) bool {
	if len(s) > 256 {
		return false
	}
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "ws" || u.Scheme == "wss") && u.Host != "" && u.User == nil
}

func TestRelayAndLNTags(t *testing.T) {
	long := "wss://r.example/" + strings.Repeat("p", 256-len("wss://r.example/"))
	for _, u := range []string{"wss://r.example", "ws://127.0.0.1:7777", "https://r.example", "wss://", "wss://u:p@r.example",
		"wss://r.example/path?q=1", long, long + "x", "WSS://r.example", "wss:r.example", "r.example"} {
		if got, want := identity.CheckRelayURL(u) == nil, specRelayURL(u); got != want {
			t.Errorf("relay %q: identity valid %v, spec %v", u, got, want)
		}
	}
	k := secretN(t, 1)
	for _, c := range []struct {
		ln string
		ok bool
	}{
		{"02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619", true},
		{"02EEC7245D6B7D2CCB30380BFBE2A3648CD7A942653F5AA340EDCEA1F283686619", false}, // not lowercase
		{"04eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619", false}, // prefix
		{"02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f2836866", false},   // 65 bytes
		{"02" + strings.Repeat("ff", 32), false},                                      // x ≥ p: not a point
	} {
		// The validator decides (a builder may normalise its input).
		e := &nostr.Event{Kind: 3780, CreatedAt: 1767225600, Tags: nostr.Tags{{"n", "alice"}, {"ln", c.ln}}}
		if err := k.Sign(e); err != nil {
			t.Fatal(err)
		}
		_, err := identity.ValidateClaim(e)
		if (err == nil) != c.ok {
			t.Errorf("ln %s: identity.ValidateClaim err %v, doc says valid=%v", c.ln, err, c.ok)
		}
		if b, err := identity.NewClaim(k, identity.ClaimParams{Handle: "alice", LNNode: c.ln}); err == nil {
			if l := tagsNamed(b.Tags, "ln"); len(l) != 1 || !lnKey.MatchString(l[0][1]) {
				t.Errorf("ln %s: identity.NewClaim wrote %v", c.ln, l)
			}
		}
	}
	// More than 10 relays are refused.
	var many []string
	for i := 0; i < 11; i++ {
		many = append(many, "wss://r"+string(rune('a'+i))+".example")
	}
	if _, err := identity.NewClaim(k, identity.ClaimParams{Handle: "alice", Relays: many}); err == nil {
		t.Error("identity.NewClaim accepts 11 relays")
	}
}
