package eventsig

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/nbd-wtf/go-nostr"
)

func signed(t testing.TB, sk, content string, tags nostr.Tags) nostr.Event {
	t.Helper()
	evt := nostr.Event{Kind: 1, CreatedAt: 1700000000, Content: content, Tags: tags}
	if err := evt.Sign(sk); err != nil {
		t.Fatal(err)
	}
	return evt
}

var tricky = []string{"", "plain", `quote " and \ backslash`, "ctl \x00\x01\x08\x09\x0a\x0b\x0c\x0d\x0e\x1a\x1f\x7f end",
	"ünïcödé ✓ 🚀", "\u2028\u2029", strings.Repeat("long ", 500), "\xff\xfe invalid utf-8"}

func TestSerializationMatchesGoNostr(t *testing.T) {
	for i, s := range tricky {
		evt := nostr.Event{PubKey: strings.Repeat("ab", 32), CreatedAt: nostr.Timestamp(i * 1000003), Kind: i * 7,
			Content: s, Tags: nostr.Tags{{"p", s}, {"t"}, {}, {"x", s, "y"}}}
		if got, want := AppendSerialized(nil, &evt), evt.Serialize(); !bytes.Equal(got, want) {
			t.Errorf("content %q:\n got %s\nwant %s", s, got, want)
		}
		if Hash(&evt) != sha256.Sum256(evt.Serialize()) {
			t.Errorf("content %q: hash differs", s)
		}
	}
}

func TestCheckAgreesWithGoNostr(t *testing.T) {
	sk := nostr.GeneratePrivateKey()
	other := nostr.GeneratePrivateKey()
	third := nostr.GeneratePrivateKey()
	v := New(2) // tiny cache: the eviction path runs too
	for i, s := range tricky {
		good := signed(t, sk, s, nostr.Tags{{"t", s}})
		if i%2 == 1 {
			good = signed(t, other, s, nil)
		}
		cases := map[string]struct {
			mutate func(e *nostr.Event)
			want   error
		}{
			"valid":         {func(e *nostr.Event) {}, nil},
			"content":       {func(e *nostr.Event) { e.Content += "!" }, ErrID},
			"id":            {func(e *nostr.Event) { e.ID = strings.Repeat("0", 64) }, ErrID},
			"short id":      {func(e *nostr.Event) { e.ID = e.ID[:63] }, ErrID},
			"sig bit":       {func(e *nostr.Event) { e.Sig = flip(e.Sig) }, ErrSig},
			"sig not hex":   {func(e *nostr.Event) { e.Sig = "zz" + e.Sig[2:] }, ErrSig},
			"sig short":     {func(e *nostr.Event) { e.Sig = e.Sig[:126] }, ErrSig},
			"other signer":  {func(e *nostr.Event) { o := signed(t, other, e.Content, e.Tags); e.Sig = o.Sig }, ErrSig},
			"pubkey swap":   {func(e *nostr.Event) { pk, _ := nostr.GetPublicKey(third); e.PubKey = pk; e.ID = e.GetID() }, ErrSig},
			"pubkey !curve": {func(e *nostr.Event) { e.PubKey = strings.Repeat("f", 64); e.ID = e.GetID() }, ErrSig},
		}
		for name, c := range cases {
			if name == "other signer" && i%2 == 1 {
				continue // signed by other already
			}
			e := good
			e.Tags = append(nostr.Tags(nil), good.Tags...)
			c.mutate(&e)
			err := v.Check(&e)
			if !errors.Is(err, c.want) && !(err == nil && c.want == nil) {
				t.Errorf("%d %s: got %v, want %v", i, name, err, c.want)
			}
			if name == "sig short" {
				// go-nostr hex-decodes the sig into a [64]byte, zero-filling a short
				// one: it says valid whenever the dropped byte was 00 (1 time in 256).
				continue
			}
			sigOK, _ := e.CheckSignature()
			if (err == nil) != (e.CheckID() && sigOK) {
				t.Errorf("%d %s: Check says %v, go-nostr says id %v sig %v", i, name, err, e.CheckID(), sigOK)
			}
		}
	}
	if len(v.keys) > 2 {
		t.Errorf("cache holds %d keys, limit 2", len(v.keys))
	}
}

func flip(hexs string) string {
	b := []byte(hexs)
	if b[10] == '0' {
		b[10] = '1'
	} else {
		b[10] = '0'
	}
	return string(b)
}

func FuzzSerialize(f *testing.F) {
	for _, s := range tricky {
		f.Add(s, s, int64(1), 1)
	}
	f.Fuzz(func(t *testing.T, content, tag string, created int64, kind int) {
		evt := nostr.Event{PubKey: strings.Repeat("cd", 32), CreatedAt: nostr.Timestamp(created), Kind: kind,
			Content: content, Tags: nostr.Tags{{"e", tag, content}}}
		if got, want := AppendSerialized(nil, &evt), evt.Serialize(); !bytes.Equal(got, want) {
			t.Fatalf("got %q want %q", got, want)
		}
	})
}

func benchEvents(b *testing.B, authors int) []nostr.Event {
	keys := make([]string, authors)
	for i := range keys {
		keys[i] = nostr.GeneratePrivateKey()
	}
	evts := make([]nostr.Event, 1024)
	for i := range evts {
		evts[i] = signed(b, keys[i%authors], fmt.Sprintf("benchmark event %d with a little text", i), nostr.Tags{{"t", "bench"}})
	}
	return evts
}

// BenchmarkGoNostr is go-nostr's CheckID + CheckSignature, as the relay did before this package.
func BenchmarkGoNostr(b *testing.B) {
	evts := benchEvents(b, 1)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e := &evts[i%len(evts)]
		if ok, _ := e.CheckSignature(); !ok || !e.CheckID() {
			b.Fatal("bad")
		}
	}
}

func BenchmarkCheckOneAuthor(b *testing.B)   { benchCheck(b, 1) }
func BenchmarkCheckManyAuthors(b *testing.B) { benchCheck(b, 1024) }

func benchCheck(b *testing.B, authors int) {
	evts := benchEvents(b, authors)
	v := New(authors / 2) // many authors: the cache keeps missing
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := v.Check(&evts[i%len(evts)]); err != nil {
			b.Fatal(err)
		}
	}
}

// Gift wraps are signed with one-time keys (NIP-59): checking them must not
// fill the cache, while a regular author's key is kept.
func TestGiftWrapKeysNotCached(t *testing.T) {
	v := New(0)
	for range 3 {
		w := nostr.Event{Kind: nostr.KindGiftWrap, CreatedAt: 1700000000, Content: "sealed", Tags: nostr.Tags{{"p", strings.Repeat("a", 64)}}}
		if err := w.Sign(nostr.GeneratePrivateKey()); err != nil {
			t.Fatal(err)
		}
		if err := v.Check(&w); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(v.keys); n != 0 {
		t.Fatalf("%d gift-wrap keys cached, want 0", n)
	}
	e := signed(t, nostr.GeneratePrivateKey(), "hello", nil)
	if err := v.Check(&e); err != nil {
		t.Fatal(err)
	}
	if n := len(v.keys); n != 1 {
		t.Fatalf("%d keys cached after a regular event, want 1", n)
	}
}

// CheckSigs gives each event of a batch the answer CheckSig gives it alone,
// whatever mix of good, forged and malformed events the batch holds.
func TestCheckSigsMatchesCheckSig(t *testing.T) {
	sk, other := nostr.GeneratePrivateKey(), nostr.GeneratePrivateKey()
	mutations := []func(e *nostr.Event){
		func(e *nostr.Event) {},                                             // valid
		func(e *nostr.Event) { e.Sig = flip(e.Sig) },                        // forged
		func(e *nostr.Event) { e.Sig = "zz" + e.Sig[2:] },                   // not hex: never reaches libsecp256k1
		func(e *nostr.Event) { e.Sig = e.Sig[:126] },                        // short
		func(e *nostr.Event) { e.PubKey = e.PubKey[:62] },                   // short key
		func(e *nostr.Event) { e.Content += "!" },                           // signature over another hash
		func(e *nostr.Event) { e.PubKey = strings.Repeat("f", 64) },         // not on the curve
		func(e *nostr.Event) { e.Kind = nostr.KindGiftWrap; e.Sign(other) }, // valid, key not cached
	}
	var evts []*nostr.Event
	for i := range 200 {
		e := signed(t, sk, fmt.Sprintf("batch %d", i), nil)
		// A pattern that puts every mutation before and after every other.
		mutations[(i*i+i/8)%len(mutations)](&e)
		evts = append(evts, &e)
	}
	hashes := make([][32]byte, len(evts))
	for i, e := range evts {
		hashes[i] = Hash(e)
	}
	v := New(0)
	errs := make([]error, len(evts))
	v.CheckSigs(evts, hashes, errs)
	valid := 0
	for i, e := range evts {
		want := v.CheckSig(e, hashes[i])
		if errs[i] != want {
			t.Errorf("event %d: CheckSigs says %v, CheckSig says %v", i, errs[i], want)
		}
		if want == nil {
			valid++
		}
	}
	if valid == 0 || valid == len(evts) {
		t.Fatalf("%d of %d valid: the batch must mix both", valid, len(evts))
	}
	v.CheckSigs(nil, nil, nil) // an empty batch is fine
}

// NIP-01 writes the pubkey and the signature in lowercase hex. An event
// with either in uppercase is refused (Go's hex decoder took both cases: an
// uppercase pubkey, serialized as is, made another id for the same author
// and content, which a correct signature over that id then passed), by
// Check and by CheckSigs alike.
func TestUppercaseHexRefused(t *testing.T) {
	sk := nostr.GeneratePrivateKey()
	good := signed(t, sk, "case", nil)
	skb, _ := hex.DecodeString(sk)
	priv, _ := btcec.PrivKeyFromBytes(skb)
	upperKey := good
	upperKey.PubKey = strings.ToUpper(good.PubKey)
	h := sha256.Sum256(upperKey.Serialize())
	sig, err := schnorr.Sign(priv, h[:])
	if err != nil {
		t.Fatal(err)
	}
	upperKey.ID, upperKey.Sig = hex.EncodeToString(h[:]), hex.EncodeToString(sig.Serialize())
	upperSig := good
	upperSig.Sig = strings.ToUpper(good.Sig)
	mixed := good
	i := strings.IndexAny(good.Sig, "abcdef") // one letter in uppercase
	mixed.Sig = good.Sig[:i] + strings.ToUpper(good.Sig[i:i+1]) + good.Sig[i+1:]

	v := New(0)
	if err := v.Check(&good); err != nil {
		t.Fatalf("the lowercase original: %v", err)
	}
	evts := []*nostr.Event{&upperKey, &upperSig, &mixed}
	hashes := make([][32]byte, len(evts))
	for i, e := range evts {
		if e.PubKey == good.PubKey && e.Sig == good.Sig {
			t.Fatalf("case %d: not changed", i)
		}
		if err := v.Check(e); !errors.Is(err, ErrSig) {
			t.Errorf("case %d (pubkey %.8s…, sig %.8s…): Check says %v, want ErrSig", i, e.PubKey, e.Sig, err)
		}
		hashes[i] = Hash(e)
	}
	errs := make([]error, len(evts))
	v.CheckSigs(evts, hashes, errs)
	for i, err := range errs {
		if !errors.Is(err, ErrSig) {
			t.Errorf("case %d: CheckSigs says %v, want ErrSig", i, err)
		}
	}
}
