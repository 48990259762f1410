package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcutil/bech32"
	"github.com/nbd-wtf/go-nostr"
)

// Vectors from NIP-19 itself (nostr-protocol/nips 19.md, "Examples").
const (
	nip19Npub    = "npub10elfcs4fr0l0r8af98jlmgdh9c8tcxjvz9qkw038js35mp4dma8qzvjptg"
	nip19PubHex  = "7e7e9c42a91bfef19fa929e5fda1b72e0ebc1a4c1141673e2794234d86addf4e"
	nip19Nsec    = "nsec1vl029mgpspedva04g90vltkh6fvh240zqtv9k0t9af8935ke9laqsnlfe5"
	nip19SecHex  = "67dea2ed018072d675f5415ecfaed7d2597555e202d85b3d65ea4e58d2d92ffa"
	nip19Nprof   = "nprofile1qqsrhuxx8l9ex335q7he0f09aej04zpazpl0ne2cgukyawd24mayt8gpp4mhxue69uhhytnc9e3k7mgpz4mhxue69uhkg6nzv9ejuumpv34kytnrdaksjlyr9p"
	nip19ProfPub = "3bf0c63fcb93463407af97a5e5ee64fa883d107ef9e558472c4eb9aaaefa459d"
	nip19ProfNpb = "npub180cvv07tjdrrgpa0j7j7tmnyl2yr6yr7l8j4s3evf6u64th6gkwsyjh6w6"
)

// Vector from NIP-49 itself (49.md, "Test Data"): password "nostr", log_n 16.
const (
	nip49Ncryptsec = "ncryptsec1qgg9947rlpvqu76pj5ecreduf9jxhselq2nae2kghhvd5g7dgjtcxfqtd67p9m0w57lspw8gsq6yphnm8623nsl8xn9j4jdzz84zm3frztj3z7s35vpzmqf6ksu8r89qk5z2zxfmu5gv8th8wclt0h4p"
	nip49Password  = "nostr"
	nip49SecHex    = "3501454135014541350145413501453fefb02227e449e57cf4d3a3ce05378683"
)

func TestNIP19Vectors(t *testing.T) {
	pub, err := DecodeNpub(nip19Npub)
	if err != nil || pub != nip19PubHex {
		t.Fatalf("DecodeNpub = %q, %v; want %s", pub, err, nip19PubHex)
	}
	if s, err := EncodeNpub(nip19PubHex); err != nil || s != nip19Npub {
		t.Fatalf("EncodeNpub = %q, %v", s, err)
	}
	if s, err := EncodeNpub(nip19ProfPub); err != nil || s != nip19ProfNpb {
		t.Fatalf("EncodeNpub(profile) = %q, %v", s, err)
	}
	k, err := KeyFromNsec(nip19Nsec)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := k.SecretHex(); h != nip19SecHex {
		t.Fatalf("nsec decoded to the wrong secret")
	}
	if s, _ := EncodeNsec(nip19SecHex); s != nip19Nsec {
		t.Fatalf("EncodeNsec mismatch: %s", s)
	}
	if n, _ := k.Nsec(); n != nip19Nsec {
		t.Fatalf("Key.Nsec mismatch")
	}
	pp, err := DecodeNprofile(nip19Nprof)
	if err != nil {
		t.Fatal(err)
	}
	if pp.PublicKey != nip19ProfPub || len(pp.Relays) != 2 || pp.Relays[0] != "wss://r.x.com" || pp.Relays[1] != "wss://djbas.sadkb.com" {
		t.Fatalf("nprofile decoded to %+v", pp)
	}
	if s, err := EncodeNprofile(nip19ProfPub, []string{"wss://r.x.com", "wss://djbas.sadkb.com"}); err != nil || s != nip19Nprof {
		t.Fatalf("EncodeNprofile = %q, %v", s, err)
	}
	// nevent round trip (NIP-19 has no nevent vector).
	id := strings.Repeat("ab", 32)
	ne, err := EncodeNevent(id, []string{"wss://relay.example.com"}, nip19PubHex)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := DecodeNevent(ne)
	if err != nil || ep.ID != id || ep.Author != nip19PubHex || len(ep.Relays) != 1 {
		t.Fatalf("nevent round trip: %+v %v", ep, err)
	}
	// Wrong prefixes are refused.
	if _, err := DecodeNpub(nip19Nsec); !errors.Is(err, ErrNIP19) {
		t.Fatalf("DecodeNpub(nsec) err = %v", err)
	}
	if _, err := KeyFromNsec(nip19Npub); !errors.Is(err, ErrInvalidSecretKey) {
		t.Fatalf("KeyFromNsec(npub) err = %v", err)
	}
	for in, want := range map[string]string{nip19Npub: nip19PubHex, nip19Nprof: nip19ProfPub, strings.ToUpper(nip19PubHex): nip19PubHex} {
		if got, err := ParsePublicKey(in); err != nil || got != want {
			t.Errorf("ParsePublicKey(%.12s…) = %q, %v", in, got, err)
		}
	}
	if _, err := ParsePublicKey(nip19Nsec); err == nil {
		t.Error("ParsePublicKey accepted an nsec")
	}
}

func TestNIP49Vector(t *testing.T) {
	ln, err := NcryptsecLogN(nip49Ncryptsec)
	if err != nil || ln != 16 {
		t.Fatalf("log_n = %d, %v", ln, err)
	}
	k, err := KeyFromNcryptsec(nip49Ncryptsec, nip49Password)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := k.SecretHex(); h != nip49SecHex {
		t.Fatalf("NIP-49 vector decrypted to the wrong key")
	}
	if _, err := KeyFromNcryptsec(nip49Ncryptsec, "nostR"); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong password err = %v", err)
	}
}

func TestNIP49RoundTrip(t *testing.T) {
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := k.Ncryptsec("correct horse battery", 8)
	if err != nil {
		t.Fatal(err)
	}
	if ln, _ := NcryptsecLogN(nc); ln != 8 {
		t.Fatalf("log_n %d", ln)
	}
	k2, err := KeyFromNcryptsec(nc, "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := k.SecretHex()
	b, _ := k2.SecretHex()
	if a != b || k.PublicKey() != k2.PublicKey() {
		t.Fatal("round trip changed the key")
	}
	// NIP-49 normalises passwords with NFKC: a compatibility form decrypts.
	nc2, _ := k.Ncryptsec("ｐａｓｓ phrase ﬁne", 4)
	if _, err := KeyFromNcryptsec(nc2, "pass phrase fine"); err != nil {
		t.Fatalf("NFKC-equivalent passphrase refused: %v", err)
	}
	if _, err := NcryptsecLogN("ncryptsec1qqqq"); err == nil {
		t.Fatal("malformed ncryptsec accepted")
	}
}

func TestImportForms(t *testing.T) {
	for _, in := range []string{nip19SecHex, " " + nip19Nsec + "\n", strings.ToUpper(nip19SecHex)} {
		k, err := ParseSecretKey(in)
		if err != nil {
			t.Fatalf("ParseSecretKey: %v", err)
		}
		if k.Npub() == "" || len(k.PublicKey()) != 64 {
			t.Fatal("no public key")
		}
	}
	bad := []string{"", "00", strings.Repeat("00", 32), strings.Repeat("ff", 32), strings.Repeat("zz", 32), nip49Ncryptsec}
	for _, in := range bad {
		if _, err := ParseSecretKey(in); !errors.Is(err, ErrInvalidSecretKey) {
			t.Errorf("ParseSecretKey(%.10q) err = %v, want ErrInvalidSecretKey", in, err)
		}
	}
}

func TestKeyNeverFormatsSecret(t *testing.T) {
	k, err := KeyFromHex(nip19SecHex)
	if err != nil {
		t.Fatal(err)
	}
	nsec, _ := k.Nsec()
	var outs []string
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d", "%T %v"} {
		outs = append(outs, fmt.Sprintf(f, k))
	}
	outs = append(outs, fmt.Sprint(k), fmt.Sprint(*k), fmt.Sprintf("%v", []*Key{k}),
		fmt.Sprintf("%+v", struct{ K *Key }{k}), fmt.Sprintf("%v", map[string]*Key{"a": k}))
	j, _ := json.Marshal(struct{ K *Key }{k})
	outs = append(outs, string(j))
	secBytes := fmt.Sprint([]byte(nip19SecHex)) // never expected, but cheap
	for _, o := range outs {
		if strings.Contains(strings.ToLower(o), nip19SecHex) || strings.Contains(o, nsec) || strings.Contains(o, secBytes) {
			t.Fatalf("secret leaked in %q", o)
		}
		if strings.Contains(o, "103 222 162") { // first bytes of the secret in decimal
			t.Fatalf("secret bytes leaked in %q", o)
		}
	}
	if !strings.Contains(outs[0], k.Npub()) {
		t.Fatalf("%%v should show the npub: %q", outs[0])
	}
	if fp := k.Fingerprint(); len(fp) != 24 {
		t.Fatalf("fingerprint %q", fp)
	}
	if got := Fingerprint(nip19PubHex); got != "7E7E 9C42 A91B FEF1 9FA9" {
		t.Fatalf("Fingerprint = %q", got)
	}
}

func TestSignAndWipe(t *testing.T) {
	k, _ := GenerateKey()
	evt := &nostr.Event{Kind: 1, Content: "hi", CreatedAt: nostr.Now()}
	if err := k.SignEvent(context.Background(), evt); err != nil {
		t.Fatal(err)
	}
	if ok, err := evt.CheckSignature(); !ok || err != nil || evt.PubKey != k.PublicKey() {
		t.Fatalf("signature does not verify: %v", err)
	}
	d := sha256Sum([]byte("msg"))
	sig, err := k.SignDigest(d)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyDigest(k.PublicKey(), d, sig); err != nil {
		t.Fatal(err)
	}
	other, _ := GenerateKey()
	if err := VerifyDigest(other.PublicKey(), d, sig); err == nil {
		t.Fatal("signature verified under another key")
	}
	k.Wipe()
	if err := k.Sign(&nostr.Event{Kind: 1}); !errors.Is(err, ErrKeyWiped) {
		t.Fatalf("sign after wipe: %v", err)
	}
	if _, err := k.Nsec(); !errors.Is(err, ErrKeyWiped) {
		t.Fatalf("nsec after wipe: %v", err)
	}
}

// Every decoder refuses an entity of another kind with an error, also a
// malformed one go-nostr cannot decode: an naddr whose kind entry is one
// byte long made go-nostr's Decode index out of range, and DecodeNpub,
// DecodeNprofile, DecodeNevent and KeyFromNsec panicked on it.
func TestNIP19DecodersRefuseMalformedOtherKinds(t *testing.T) {
	b5, err := bech32.ConvertBits([]byte{3, 1, 7}, 8, 5, true) // TLV: kind, length 1
	if err != nil {
		t.Fatal(err)
	}
	naddr, err := bech32.Encode("naddr", b5)
	if err != nil {
		t.Fatal(err)
	}
	for name, decode := range map[string]func(string) error{
		"DecodeNpub":     func(s string) error { _, err := DecodeNpub(s); return err },
		"DecodeNprofile": func(s string) error { _, err := DecodeNprofile(s); return err },
		"DecodeNevent":   func(s string) error { _, err := DecodeNevent(s); return err },
		"KeyFromNsec":    func(s string) error { _, err := KeyFromNsec(s); return err },
	} {
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("%s(%s) panicked: %v", name, naddr, p)
				}
			}()
			if err := decode(naddr); err == nil {
				t.Errorf("%s(%s) accepted an naddr", name, naddr)
			}
		}()
	}
}
