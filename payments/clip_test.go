package payments

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// A peer's reason is kept as valid UTF-8 of at most maxPeerReason bytes,
// cut between characters (a byte cut at 300 split a character).
func TestClipReason(t *testing.T) {
	for _, in := range []string{
		"short",
		strings.Repeat("a", 299) + "é", // é straddles byte 300
		strings.Repeat("€", 200),       // 3-byte runes: 300 is a boundary
		strings.Repeat("ab", 1000),
		"bad \xff byte",
	} {
		got := clipReason(in)
		if !utf8.ValidString(got) || len(got) > maxPeerReason {
			t.Errorf("clipReason(%d bytes) = %d bytes, valid %v", len(in), len(got), utf8.ValidString(got))
		}
		if len(in) <= maxPeerReason && utf8.ValidString(in) && got != in {
			t.Errorf("clipReason(%q) = %q, want it whole", in, got)
		}
	}
	if got := clipReason(strings.Repeat("a", 299) + "é"); got != strings.Repeat("a", 299) {
		t.Errorf("cut: %q", got)
	}
}
