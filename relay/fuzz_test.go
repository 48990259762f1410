package relay

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nbd-wtf/go-nostr"
)

// FuzzParseClientMessage feeds arbitrary frames to the parser: it must never
// panic, every error must carry a NIP-01 prefix, and whatever it accepts must
// be well-formed.
func FuzzParseClientMessage(f *testing.F) {
	sk := nostr.GeneratePrivateKey()
	evt := nostr.Event{Kind: 1, Content: "hi", CreatedAt: 1700000000, Tags: nostr.Tags{{"p", strings.Repeat("a", 64)}, {"-"}}}
	_ = evt.Sign(sk)
	raw, _ := evt.MarshalJSON()
	for _, seed := range []string{
		`["EVENT",` + string(raw) + `]`,
		`["AUTH",` + string(raw) + `]`,
		`["REQ","s",{"kinds":[1],"#p":["` + strings.Repeat("a", 64) + `"],"limit":0},{"since":1,"until":2}]`,
		`["COUNT","c",{"authors":["` + strings.Repeat("b", 64) + `"]}]`,
		`["CLOSE","s"]`, `["REQ","s"]`, `["EVENT",{}]`, `[1,2]`, `[]`, `{}`, `"x"`, `["HELLO"]`,
		`["EVENT",{"id":"` + strings.Repeat("0", 64) + `","pubkey":1}]`, `["REQ","s",{"kinds":[-1]}]`, `["REQ","",{}]`,
		`["REQ","s",{"#pp":["x"],"ids":["zz"]}]`, "[\"EVENT\",\xff]",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := ParseClientMessage(data)
		if err != nil {
			pe, ok := err.(*ParseError)
			if !ok || !strings.HasPrefix(pe.Msg, "invalid: ") {
				t.Fatalf("error without a NIP-01 prefix: %v", err)
			}
			if pe.EventID != "" && !isLowerHex(pe.EventID, 64) {
				t.Fatalf("bad event id hint %q", pe.EventID)
			}
			return
		}
		switch msg.Verb {
		case VerbEvent, VerbAuth:
			e := msg.Event
			if e == nil || !isLowerHex(e.ID, 64) || !isLowerHex(e.PubKey, 64) || !isLowerHex(e.Sig, 128) || e.Kind < 0 || e.Kind > 65535 {
				t.Fatalf("accepted a malformed event: %+v", e)
			}
		case VerbReq, VerbCount:
			if msg.SubID == "" || len(msg.Filters) == 0 {
				t.Fatalf("accepted %s without subscription or filters", msg.Verb)
			}
			for _, flt := range msg.Filters {
				for _, id := range append(append([]string{}, flt.IDs...), flt.Authors...) {
					if !isLowerHex(id, 64) {
						t.Fatalf("accepted a filter with id/author %q", id)
					}
				}
				// Matching must not panic on whatever the filter holds.
				flt.Matches(&evt)
			}
		case VerbClose:
			if msg.SubID == "" {
				t.Fatal("accepted CLOSE without a subscription id")
			}
		default:
			t.Fatalf("accepted unknown verb %q", msg.Verb)
		}
	})
}

// FuzzFrames checks that hand-built frames are valid JSON carrying exactly their strings.
func FuzzFrames(f *testing.F) {
	for _, s := range []string{"", "sub", `q"uo\te`, "line\nbreak\x00\x1f", "ünïcødé ✓"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return // JSON strings are UTF-8; the parser only hands out what JSON held
		}
		var ok []any
		if err := json.Unmarshal(okFrame(s, true, s), &ok); err != nil || ok[1] != s || ok[3] != s || ok[2] != true {
			t.Fatalf("okFrame(%q) = %s (%v)", s, okFrame(s, true, s), err)
		}
		var ev []json.RawMessage
		if err := json.Unmarshal(eventFrame(s, []byte(`{"id":"x"}`)), &ev); err != nil {
			t.Fatalf("eventFrame(%q): %v", s, err)
		}
		var sub string
		if err := json.Unmarshal(ev[1], &sub); err != nil || sub != s {
			t.Fatalf("eventFrame sub %q != %q", sub, s)
		}
	})
}
