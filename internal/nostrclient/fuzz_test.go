package nostrclient

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/nbd-wtf/go-nostr"
)

// FuzzRelayFrames feeds what a relay might send (frames separated by
// newlines) to the reader of a connection with a subscription and a publish
// waiting: nothing may panic or block, and the reader's bookkeeping stays
// consistent.
func FuzzRelayFrames(f *testing.F) {
	id := "ab" + string(bytes.Repeat([]byte("0"), 62))
	forged := `{"id":"` + id + `","pubkey":"` + id + `","created_at":1,"kind":1,"tags":[["p","x"]],"content":"c","sig":"` + id + id + `"}`
	signed := nostr.Event{Kind: 1, CreatedAt: 1, Tags: nostr.Tags{{"p", "x"}}, Content: "c"}
	if err := signed.Sign(strings.Repeat("01", 32)); err != nil {
		f.Fatal(err)
	}
	raw, _ := json.Marshal(signed)
	evt := string(raw)
	for _, s := range []string{
		`["EVENT","s1",` + forged + `]`,
		`["EVENT","s1",` + evt + `]` + "\n" + `["EOSE","s1"]` + "\n" + `["EVENT","s1",` + evt + `]`,
		`["OK","` + id + `",true,""]` + "\n" + `["OK","` + id + `",false,"blocked: no"]`,
		`["AUTH",""]` + "\n" + `["AUTH","c"]` + "\n" + `["AUTH",""]`,
		`["CLOSED","s1","auth-required: who?"]` + "\n" + `["CLOSED","s1","x"]`,
		`["EOSE","s1"]` + "\n" + `["CLOSED","s1","error: bye"]` + "\n" + `["EVENT","s1",` + evt + `]`,
		`["NOTICE","hi"]` + "\n" + `not json` + "\n" + `[]` + "\n" + `["EVENT"]` + "\n" + `["COUNT","s1",{"count":3}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithCancelCause(context.Background())
		defer cancel(nil)
		c := &Conn{
			url: "ws://fuzz", ctx: ctx, cancel: cancel,
			oks: make(map[string][]chan okResult), subs: make(map[string]*Subscription),
			chalCh: make(chan struct{}), maxStored: 1 << 30, maxStoredBytes: 1 << 60,
		}
		s := c.newSubscription("s1", nostr.Filters{{}})
		okc := make(chan okResult, 1)
		c.oks[id] = []chan okResult{okc}
		for _, frame := range bytes.Split(data, []byte("\n")) {
			select {
			case <-s.events: // a reader that keeps up
			default:
			}
			if !c.handleFrame(frame) {
				t.Fatal("reader stopped on a live connection")
			}
		}
		c.mu.Lock()
		_, stillOpen := c.subs["s1"]
		_, stillWaiting := c.oks[id]
		c.mu.Unlock()
		select {
		case <-s.ended:
			if stillOpen || !s.eoseSeen {
				t.Fatal("ended, but still registered or before EOSE")
			}
		default:
		}
		if len(okc) == 1 && stillWaiting {
			t.Fatal("OK delivered but still waited for")
		}
		if len(s.closed) == 1 && (stillOpen || s.eoseSeen) {
			t.Fatal("CLOSED before EOSE, but still registered")
		}
	})
}
