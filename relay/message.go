package relay

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/mailru/easyjson"
	"github.com/nbd-wtf/go-nostr"
	"github.com/tidwall/gjson"
)

// Verb is the first element of a client message.
type Verb string

// The client-to-relay verbs this relay understands (NIP-01, NIP-42, NIP-45).
const (
	VerbEvent Verb = "EVENT"
	VerbReq   Verb = "REQ"
	VerbClose Verb = "CLOSE"
	VerbCount Verb = "COUNT"
	VerbAuth  Verb = "AUTH"
)

// ClientMessage is one parsed client message. Only the fields of its verb are set.
// Every string in it is a copy: it never aliases the frame it was parsed from.
type ClientMessage struct {
	Verb    Verb
	Event   *nostr.Event   // EVENT, AUTH
	SubID   string         // REQ, CLOSE, COUNT
	Filters []nostr.Filter // REQ, COUNT
}

// ParseError is a message the relay could not parse; its text starts with a
// NIP-01 machine-readable prefix and is safe to send back in a NOTICE or OK.
type ParseError struct {
	EventID string // set when the bad message was an EVENT whose id could be read
	Msg     string
}

func (e *ParseError) Error() string { return e.Msg }

// parseErr builds a ParseError. Its text may quote the frame (easyjson's
// errors quote a piece of it, cut at a byte count): invalid UTF-8 there
// becomes U+FFFD, since an OK is written byte for byte and a text frame that
// is not UTF-8 makes the client fail the connection.
func parseErr(id, format string, args ...any) *ParseError {
	return &ParseError{EventID: id, Msg: strings.ToValidUTF8(fmt.Sprintf(format, args...), "\uFFFD")}
}

// ErrUnknownVerb is wrapped by the ParseError for a well-formed message with a verb this relay does not know.
var ErrUnknownVerb = errors.New("unknown verb")

// ParseClientMessage parses one websocket text frame from a client. It
// validates the JSON fully before decoding, so a truncated or otherwise
// malformed frame is always an error and never a partially-filled message.
// Limits on the number of filters and the like are the caller's business.
func ParseClientMessage(data []byte) (*ClientMessage, error) {
	if !gjson.ValidBytes(data) {
		return nil, parseErr("", "invalid: malformed JSON")
	}
	if evt := fastEvent(data); evt != nil {
		return &ClientMessage{Verb: VerbEvent, Event: evt}, nil
	}
	root := gjson.ParseBytes(data)
	if !root.IsArray() {
		return nil, parseErr("", "invalid: a message must be a JSON array")
	}
	arr := root.Array()
	if len(arr) == 0 || arr[0].Type != gjson.String {
		return nil, parseErr("", "invalid: a message must start with a verb string")
	}
	verb := Verb(arr[0].Str)
	switch verb {
	case VerbEvent:
		if len(arr) != 2 {
			return nil, parseErr(eventIDHint(data), "invalid: EVENT takes exactly one event")
		}
		evt, err := parseEvent(arr[1])
		if err != nil {
			return nil, parseErr(eventIDHint(data), "invalid: %v", err)
		}
		return &ClientMessage{Verb: verb, Event: evt}, nil
	case VerbAuth:
		if len(arr) != 2 {
			return nil, parseErr("", "invalid: AUTH takes exactly one event")
		}
		evt, err := parseEvent(arr[1])
		if err != nil {
			return nil, parseErr(eventIDHint(data), "invalid: %v", err)
		}
		return &ClientMessage{Verb: verb, Event: evt}, nil
	case VerbReq, VerbCount:
		if len(arr) < 2 {
			return nil, parseErr("", "invalid: %s needs a subscription id and at least one filter", verb)
		}
		sub, err := parseSubID(arr[1])
		if err != nil {
			return nil, err
		}
		if len(arr) == 2 { // refused under its id (CLOSED), which the client waits on
			return &ClientMessage{Verb: verb, SubID: sub}, parseErr("", "invalid: %s needs at least one filter", verb)
		}
		filters := make([]nostr.Filter, 0, len(arr)-2)
		for i, raw := range arr[2:] {
			f, err := parseFilter(raw)
			if err != nil {
				return &ClientMessage{Verb: verb, SubID: sub}, parseErr("", "invalid: filter %d: %v", i, err)
			}
			filters = append(filters, f)
		}
		return &ClientMessage{Verb: verb, SubID: sub, Filters: filters}, nil
	case VerbClose:
		if len(arr) != 2 {
			return nil, parseErr("", "invalid: CLOSE takes exactly one subscription id")
		}
		sub, err := parseSubID(arr[1])
		if err != nil {
			return nil, err
		}
		return &ClientMessage{Verb: verb, SubID: sub}, nil
	default:
		return nil, &ParseError{Msg: fmt.Sprintf("invalid: %v %q", ErrUnknownVerb, truncate(string(verb), 32))}
	}
}

func parseSubID(v gjson.Result) (string, error) {
	if v.Type != gjson.String {
		return "", parseErr("", "invalid: subscription id must be a string")
	}
	if v.Str == "" {
		return "", parseErr("", "invalid: subscription id must not be empty")
	}
	return string([]byte(v.Str)), nil // copy: never alias the frame
}

// eventFields is the event object v with only the NIP-01 fields, in their
// order, values byte for byte. NIP-01 does not forbid other fields, and the
// id covers none of them, so they are dropped, but go-nostr's decoder stops
// at a field it does not know.
func eventFields(v gjson.Result) []byte {
	known := func(k string) bool {
		switch k {
		case "id", "pubkey", "created_at", "kind", "tags", "content", "sig":
			return true
		}
		return false
	}
	extra := false
	v.ForEach(func(k, _ gjson.Result) bool {
		extra = !known(k.Str)
		return !extra
	})
	if !extra {
		return []byte(v.Raw)
	}
	out := []byte{'{'}
	v.ForEach(func(k, val gjson.Result) bool {
		if known(k.Str) {
			if len(out) > 1 {
				out = append(out, ',')
			}
			out = append(append(append(out, k.Raw...), ':'), val.Raw...)
		}
		return true
	})
	return append(out, '}')
}

func parseEvent(v gjson.Result) (*nostr.Event, error) {
	if !v.IsObject() {
		return nil, errors.New("event must be a JSON object")
	}
	// Every NIP-01 field must be present with the right JSON type: easyjson
	// silently zero-fills missing fields, which would make a half event look valid.
	for _, f := range [...]struct {
		name string
		typ  gjson.Type
	}{{"id", gjson.String}, {"pubkey", gjson.String}, {"created_at", gjson.Number}, {"kind", gjson.Number}, {"content", gjson.String}, {"sig", gjson.String}} {
		if r := v.Get(f.name); r.Type != f.typ {
			return nil, fmt.Errorf("event field %q missing or of the wrong type", f.name)
		}
	}
	if tags := v.Get("tags"); !tags.IsArray() {
		return nil, errors.New(`event field "tags" missing or not an array`)
	} else {
		var bad error
		tags.ForEach(func(_, tag gjson.Result) bool {
			if !tag.IsArray() {
				bad = errors.New("every tag must be an array of strings")
				return false
			}
			tag.ForEach(func(_, s gjson.Result) bool {
				if s.Type != gjson.String {
					bad = errors.New("every tag must be an array of strings")
				}
				return bad == nil
			})
			return bad == nil
		})
		if bad != nil {
			return nil, bad
		}
	}
	evt := new(nostr.Event)
	// easyjson copies strings out of its input, so the event does not alias the frame.
	if err := easyjson.Unmarshal(eventFields(v), evt); err != nil {
		return nil, fmt.Errorf("bad event: %w", err)
	}
	if !isLowerHex(evt.ID, 64) {
		return nil, errors.New("id must be 64 lowercase hex characters")
	}
	if !isLowerHex(evt.PubKey, 64) {
		return nil, errors.New("pubkey must be 64 lowercase hex characters")
	}
	if !isLowerHex(evt.Sig, 128) {
		return nil, errors.New("sig must be 128 lowercase hex characters")
	}
	if evt.Kind < 0 || evt.Kind > 65535 {
		return nil, errors.New("kind must be between 0 and 65535")
	}
	if evt.CreatedAt < 0 {
		return nil, errors.New("created_at must not be negative")
	}
	return evt, nil
}

func parseFilter(v gjson.Result) (nostr.Filter, error) {
	var f nostr.Filter
	if !v.IsObject() {
		return f, errors.New("a filter must be a JSON object")
	}
	var bad error
	v.ForEach(func(key, val gjson.Result) bool {
		k := key.Str
		switch {
		case k == "ids" || k == "authors":
			bad = checkStringArray(val, k, true)
		case k == "kinds":
			if !val.IsArray() {
				bad = errors.New(`"kinds" must be an array of integers`)
				break
			}
			val.ForEach(func(_, n gjson.Result) bool {
				if n.Type != gjson.Number || n.Num != float64(int64(n.Num)) || n.Num < 0 || n.Num > 65535 {
					bad = errors.New(`"kinds" must be an array of integers 0..65535`)
				}
				return bad == nil
			})
		case k == "since" || k == "until" || k == "limit":
			// The literal itself, not val.Num: a float64 cannot tell an
			// integer near math.MaxInt64 from 2^63.
			if n, err := strconv.ParseInt(val.Raw, 10, 64); val.Type != gjson.Number || err != nil || n < 0 {
				bad = fmt.Errorf("%q must be a non-negative integer", k)
			}
		case len(k) == 2 && k[0] == '#':
			bad = checkStringArray(val, k, false)
		case len(k) > 0 && k[0] == '#':
			// The store indexes single-letter tags only (NIP-01); matched
			// live but never stored, such a filter would answer
			// differently before and after EOSE.
			bad = fmt.Errorf("%q: only single-letter tags can be filtered on (NIP-01)", k)
		case k == "search":
			if val.Type != gjson.String {
				bad = errors.New(`"search" must be a string`)
			}
		}
		return bad == nil
	})
	if bad != nil {
		return f, bad
	}
	if err := easyjson.Unmarshal([]byte(v.Raw), &f); err != nil {
		return f, fmt.Errorf("bad filter: %w", err)
	}
	return f, nil
}

func checkStringArray(v gjson.Result, name string, hex bool) error {
	if !v.IsArray() {
		return fmt.Errorf("%q must be an array of strings", name)
	}
	var bad error
	v.ForEach(func(_, s gjson.Result) bool {
		switch {
		case s.Type != gjson.String:
			bad = fmt.Errorf("%q must be an array of strings", name)
		case hex && !isLowerHex(s.Str, 64):
			bad = fmt.Errorf("%q must hold 64-character lowercase hex strings", name)
		}
		return bad == nil
	})
	return bad
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// eventIDHint digs an event id out of a frame that could not be parsed (or
// was too large to parse), so the rejection can be an OK for that id rather
// than an anonymous NOTICE. It only looks at the first few KiB.
func eventIDHint(data []byte) string {
	if len(data) > 4096 {
		data = data[:4096]
	}
	i := bytes.Index(data, []byte(`"id"`))
	if i < 0 {
		return ""
	}
	rest := bytes.TrimLeft(data[i+4:], " \t\r\n")
	if len(rest) == 0 || rest[0] != ':' {
		return ""
	}
	rest = bytes.TrimLeft(rest[1:], " \t\r\n")
	if len(rest) < 66 || rest[0] != '"' || rest[65] != '"' {
		return ""
	}
	if id := string(rest[1:65]); isLowerHex(id, 64) {
		return id
	}
	return ""
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
