package relay

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nbd-wtf/go-nostr"
	"github.com/tidwall/gjson"
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

// FuzzFastEvent holds the EVENT fast path to the general parser: whatever it
// accepts, parseEvent accepts too, with an identical event.
func FuzzFastEvent(f *testing.F) {
	sk := nostr.GeneratePrivateKey()
	for _, e := range []nostr.Event{
		{Kind: 1, Content: "hi \"q\" \\ \u2603 \x01", CreatedAt: 1700000000, Tags: nostr.Tags{{"p", strings.Repeat("a", 64)}, {"-"}, {}}},
		{Kind: 30023, CreatedAt: 1, Tags: nostr.Tags{}},
	} {
		_ = e.Sign(sk)
		raw, _ := e.MarshalJSON()
		f.Add([]byte(`["EVENT",` + string(raw) + `]`))
		f.Add([]byte(`["EVENT",` + string(raw) + `,1]`))
		f.Add([]byte(`["EVENT",` + strings.Replace(string(raw), `"kind":`, `"kind":1,"kind":`, 1) + `]`))
		f.Add([]byte(`["EVENT",` + strings.Replace(string(raw), `"tags":[`, `"x":{"y":[1,{}]},"tags":[`, 1) + `]`))
		f.Add([]byte(`["EVENT",` + strings.Replace(string(raw), `"created_at":`, `"created_at":1.5e`, 1) + `]`))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !gjson.ValidBytes(data) {
			return
		}
		fast := fastEvent(data)
		if fast == nil {
			return
		}
		arr := gjson.ParseBytes(data).Array()
		if len(arr) != 2 || arr[0].Str != "EVENT" {
			t.Fatalf("fast path accepted a frame that is not [\"EVENT\",{...}]: %s", data)
		}
		slow, err := parseEvent(arr[1])
		if err != nil {
			t.Fatalf("fast path accepted what parseEvent refuses (%v): %s", err, data)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("fast and general parsers disagree on %s:\n fast %#v\n slow %#v", data, fast, slow)
		}
	})
}

// The fast path must actually take the frames clients send, and leave the
// rest (and every error message) to the general parser.
func TestFastEventTakesTypicalFrames(t *testing.T) {
	sk := nostr.GeneratePrivateKey()
	e := nostr.Event{Kind: 1, Content: "hello", CreatedAt: 1700000000, Tags: nostr.Tags{{"p", strings.Repeat("a", 64)}}}
	_ = e.Sign(sk)
	raw, _ := e.MarshalJSON()
	if got := fastEvent([]byte(`["EVENT",` + string(raw) + `]`)); got == nil || got.ID != e.ID || got.Tags[0][1] != e.Tags[0][1] {
		t.Fatalf("fast path refused or garbled a typical EVENT: %+v", got)
	}
	for _, frame := range []string{
		`[ "EVENT",` + string(raw) + `]`,                                                         // another layout
		`["EVENT",` + string(raw) + `,{}]`,                                                       // extra element
		`["EVENT",` + strings.Replace(string(raw), `"sig":`, `"sig":1,"x":`, 1) + `]`,            // mistyped
		`["EVENT",` + strings.Replace(string(raw), `"id":`, `"id":"0","id":`, 1) + `]`,           // repeated
		`["EVENT",` + strings.Replace(string(raw), `"kind":1`, `"kind":1.5`, 1) + `]`,            // not an integer
		`["EVENT",` + strings.Replace(string(raw), `"content":"hello",`, ``, 1) + `]`,            // missing
		`["EVENT",` + strings.Replace(string(raw), e.PubKey, strings.ToUpper(e.PubKey), 1) + `]`, // upper-case hex
	} {
		if got := fastEvent([]byte(frame)); got != nil {
			t.Errorf("fast path took %s", frame)
		}
	}
}
