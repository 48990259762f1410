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
// panic, every error must carry a NIP-01 prefix and be valid UTF-8, and
// whatever it accepts must be well-formed.
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
		`["EVENT",{"id":"` + strings.Repeat("0", 64) + `","pubkey":"` + strings.Repeat("0", 64) + `","created_at":1,"kind":1,"tags":[],"content":"","sig":"` + strings.Repeat("0", 128) + `","kind":"aééééééé"}]`,
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
			if !utf8.ValidString(pe.Msg) { // sent back as it is in an OK
				t.Fatalf("error text is not UTF-8: %q", pe.Msg)
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

// FuzzMatchFilter holds the live matcher to go-nostr's: a filter as the
// relay parses and normalizes it (sorted lists, repeats dropped) matches an
// event exactly when the filter as sent does. Besides the fuzzed event, the
// events tried sit on the filter's edges: its first and last kinds, ids,
// authors and tag values, and a second either side of since and until.
func FuzzMatchFilter(f *testing.F) {
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	f.Add(`{"kinds":[1,7,1,0],"authors":["`+b+`","`+b+`","`+a+`"]}`, 1, true, "p", b, int64(5))
	f.Add(`{"ids":["`+a+`"],"#p":["`+b+`","`+a+`","`+a+`"],"since":3,"until":9}`, 7, false, "p", a, int64(9))
	f.Add(`{"kinds":[],"#t":["x","y","x"]}`, 0, true, "t", "y", int64(0))
	f.Add(`{"ids":["`+b+`","`+a+`"]}`, 1, true, "e", a, int64(1))
	f.Add(`{"#e":[],"#t":["z","é","a","é"],"limit":2}`, 30023, false, "t", "é", int64(1<<40))
	f.Fuzz(func(t *testing.T, filter string, kind int, idA bool, tagName, tagValue string, createdAt int64) {
		msg, err := ParseClientMessage([]byte(`["REQ","s",` + filter + `]`))
		if err != nil {
			return
		}
		pick := func(first bool) string {
			if first {
				return a
			}
			return b
		}
		edges := func(vals []string, fuzzed string) []string {
			if len(vals) == 0 {
				return []string{fuzzed}
			}
			return []string{fuzzed, vals[0], vals[len(vals)-1]}
		}
		for _, sent := range msg.Filters {
			normalized := sent.Clone()
			normalizeFilter(&normalized)
			kinds := []int{kind}
			if len(sent.Kinds) > 0 {
				kinds = append(kinds, sent.Kinds[0], sent.Kinds[len(sent.Kinds)-1])
			}
			times := []int64{createdAt}
			for _, ts := range []*nostr.Timestamp{sent.Since, sent.Until} {
				if ts != nil {
					times = append(times, int64(*ts)-1, int64(*ts), int64(*ts)+1)
				}
			}
			values := []string{tagValue}
			for _, vals := range sent.Tags {
				values = append(values, edges(vals, tagValue)...)
			}
			for _, id := range edges(sent.IDs, pick(idA)) {
				for _, pk := range edges(sent.Authors, pick(!idA)) {
					for _, k := range kinds {
						for _, ts := range times {
							for _, v := range values {
								for name := range sent.Tags {
									evt := &nostr.Event{ID: id, PubKey: pk, Kind: k, CreatedAt: nostr.Timestamp(ts),
										Tags: nostr.Tags{{tagName, tagValue}, {name, v}, {name}}}
									if got, want := matchFilter(&normalized, evt), sent.Matches(evt); got != want {
										t.Fatalf("filter %s on %+v: matchFilter %v, Matches %v", filter, evt, got, want)
									}
								}
								evt := &nostr.Event{ID: id, PubKey: pk, Kind: k, CreatedAt: nostr.Timestamp(ts), Tags: nostr.Tags{{tagName, v}}}
								if got, want := matchFilter(&normalized, evt), sent.Matches(evt); got != want {
									t.Fatalf("filter %s on %+v: matchFilter %v, Matches %v", filter, evt, got, want)
								}
							}
						}
					}
				}
			}
		}
	})
}
