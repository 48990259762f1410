package relay

import (
	"bytes"

	"github.com/mailru/easyjson/jlexer"
	"github.com/nbd-wtf/go-nostr"
)

// eventPrefix is how nearly every EVENT frame starts.
var eventPrefix = []byte(`["EVENT",`)

// fastEvent decodes an ["EVENT",{...}] frame in one pass, for the ingest hot
// path. data must already be valid JSON. It returns nil for anything it is not
// sure of (another layout, a missing, repeated or mistyped field, a malformed
// value, an unknown field), and the caller then parses the frame with the general parser, which
// owns every error message. So fastEvent never accepts what parseEvent would
// refuse, and it decodes strings with the same lexer (FuzzFastEvent holds it to
// both).
func fastEvent(data []byte) *nostr.Event {
	if !bytes.HasPrefix(data, eventPrefix) {
		return nil
	}
	l := jlexer.Lexer{Data: data[len(eventPrefix):]}
	evt := new(nostr.Event)
	const (
		fID = 1 << iota
		fPubkey
		fCreatedAt
		fKind
		fTags
		fContent
		fSig
		fAll = 1<<iota - 1
	)
	seen := 0
	str := func(bit int, dst *string) bool {
		if seen&bit != 0 || l.CurrentToken() != jlexer.TokenString {
			return false
		}
		seen |= bit
		*dst = l.String()
		return true
	}
	num := func(bit int) (int64, bool) {
		if seen&bit != 0 || l.CurrentToken() != jlexer.TokenNumber {
			return 0, false
		}
		seen |= bit
		return l.Int64(), true
	}
	l.Delim('{')
	for l.Ok() && !l.IsDelim('}') {
		key := l.UnsafeFieldName(true) // an escaped key is "unknown": the general parser decides
		l.WantColon()
		ok := true
		switch key {
		case "id":
			ok = str(fID, &evt.ID)
		case "pubkey":
			ok = str(fPubkey, &evt.PubKey)
		case "sig":
			ok = str(fSig, &evt.Sig)
		case "content":
			ok = str(fContent, &evt.Content)
		case "created_at":
			var n int64
			n, ok = num(fCreatedAt)
			evt.CreatedAt = nostr.Timestamp(n)
		case "kind":
			var n int64
			n, ok = num(fKind)
			evt.Kind = int(n)
		case "tags":
			if seen&fTags != 0 {
				return nil
			}
			seen |= fTags
			evt.Tags, ok = fastTags(&l)
		default:
			return nil // an unknown field: the general parser drops it
		}
		if !ok {
			return nil
		}
		l.WantComma()
	}
	l.Delim('}')
	if !l.Ok() || len(l.GetNonFatalErrors()) > 0 || seen != fAll {
		return nil
	}
	// The lexer took the object as a whole value; the frame must close right after it.
	if rest := bytes.TrimSpace(l.Data[l.GetPos():]); len(rest) != 1 || rest[0] != ']' {
		return nil
	}
	if !isLowerHex(evt.ID, 64) || !isLowerHex(evt.PubKey, 64) || !isLowerHex(evt.Sig, 128) ||
		evt.Kind < 0 || evt.Kind > 65535 || evt.CreatedAt < 0 {
		return nil
	}
	return evt
}

// fastTags decodes an array of arrays of strings, or reports false.
func fastTags(l *jlexer.Lexer) (nostr.Tags, bool) {
	if l.CurrentToken() != jlexer.TokenDelim || !l.IsDelim('[') {
		return nil, false
	}
	l.Delim('[')
	tags := nostr.Tags{}
	for l.Ok() && !l.IsDelim(']') {
		if l.CurrentToken() != jlexer.TokenDelim || !l.IsDelim('[') {
			return nil, false
		}
		l.Delim('[')
		tag := make(nostr.Tag, 0, 2)
		for l.Ok() && !l.IsDelim(']') {
			if l.CurrentToken() != jlexer.TokenString {
				return nil, false
			}
			tag = append(tag, l.String())
			l.WantComma()
		}
		l.Delim(']')
		tags = append(tags, tag)
		l.WantComma()
	}
	l.Delim(']')
	return tags, l.Ok()
}
