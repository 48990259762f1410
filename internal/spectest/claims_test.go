package spectest

import (
	"encoding/hex"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/identity"
)

// The "Handle claims" example of docs/protocol.md, verbatim.
const (
	docClaim = `{
  "kind": 3780,
  "id": "c60536e91f71021c1598fd59347ede2ff666b2c92c2033c6fbdd972701bf939d",
  "pubkey": "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
  "created_at": 1767225600,
  "tags": [
    ["n", "alice"],
    ["ln", "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619"],
    ["relay", "wss://relay.alice.example"],
    ["alt", "anchorchat handle claim: @alice"]
  ],
  "content": "",
  "sig": "e538b3f247cd78ce34abf47909ab2d9fc49b495ed28861fa5d280b450d6fe746d3e3fdb7c9470634959337968cbc734acf6acd6c6c2a5c242f07d234995749ef"
}`
	docRotation = `{
  "kind": 3780,
  "id": "d88d0dc5f6b08989fc66a60391445e401314c24f624008cdd524e0228778c2c2",
  "pubkey": "c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5",
  "created_at": 1767312000,
  "tags": [
    ["n", "alice"],
    ["relay", "wss://relay.alice.example"],
    ["prev", "c60536e91f71021c1598fd59347ede2ff666b2c92c2033c6fbdd972701bf939d",
             "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"],
    ["consent", "cc244a4c7980a1a7a21f33bbd5cdcdafe8fe07e6b73f56d2a2020b2150a4b807100eef381581799dfaaa934faf7ab9ddf5b79445543cf24ffc75df2d088799c1"],
    ["alt", "anchorchat handle rotation: @alice"]
  ],
  "content": "",
  "sig": "479249497bf431a884d32ab690045800431a028df6887dd613b2c17d6a2124ead66dc87cbce1b033447753e7dabd14b22aeb540c16057fa47497d655756283f9"
}`
	docRevocation = `{
  "kind": 3781,
  "id": "680f533c6f3ebb3a6004281070f14b48a7a038f653a60903001f935147f6ef8d",
  "pubkey": "c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5",
  "created_at": 1767398400,
  "tags": [
    ["n", "alice"],
    ["e", "d88d0dc5f6b08989fc66a60391445e401314c24f624008cdd524e0228778c2c2"],
    ["alt", "anchorchat handle revocation: @alice"]
  ],
  "content": "key retired",
  "sig": "aa30702175ca0e04bd0ebc910f6e4e254c7d4a56376390bedbb4da8a2f1213213dbef505044546d85c8d2138fe0658737f631c8dd169990b537df9b5e55571a4"
}`
	docConsentDigest = "ce6a054e34862707efaa241dba56a63bb6a93e1ac9cf2d683d439e74eb14dcfa"
	docKey1Pub       = "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
	docKey2Pub       = "c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5"
)

func parseEvent(t *testing.T, s string) *nostr.Event {
	t.Helper()
	var e nostr.Event
	if err := json.Unmarshal([]byte(s), &e); err != nil {
		t.Fatal(err)
	}
	return &e
}

func secretN(t *testing.T, n byte) *identity.Key {
	t.Helper()
	b := make([]byte, 32)
	b[31] = n
	k, err := identity.KeyFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// specVerifySig is BIP-340 verification of a 32-byte message.
func specVerifySig(t *testing.T, pubHex string, msg [32]byte, sigHex string) bool {
	t.Helper()
	pb, err := hex.DecodeString(pubHex)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := schnorr.ParsePubKey(pb)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := hex.DecodeString(sigHex)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := schnorr.ParseSignature(sb)
	if err != nil {
		return false
	}
	return sig.Verify(msg[:], pk)
}

// tagValues returns the tags named name.
func tagsNamed(tags nostr.Tags, name string) []nostr.Tag {
	var out []nostr.Tag
	for _, tg := range tags {
		if len(tg) > 0 && tg[0] == name {
			out = append(out, tg)
		}
	}
	return out
}

var (
	hex64  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	hex128 = regexp.MustCompile(`^[0-9a-f]{128}$`)
	lnKey  = regexp.MustCompile(`^0[23][0-9a-f]{64}$`)
	handle = regexp.MustCompile(`^[a-z0-9_.-]{1,32}$`)
)

// TestDocExampleEvents: the example's ids are NIP-01 hashes, its signatures
// verify, and the consent digest is the one stated and the one the rotation's
// consent tag signs.
func TestDocExampleEvents(t *testing.T) {
	k1, k2 := secretN(t, 1), secretN(t, 2)
	if k1.PublicKey() != docKey1Pub || k2.PublicKey() != docKey2Pub {
		t.Fatalf("keys 1 and 2: %s %s", k1.PublicKey(), k2.PublicKey())
	}
	for _, s := range []string{docClaim, docRotation, docRevocation} {
		e := parseEvent(t, s)
		if e.GetID() != e.ID {
			t.Errorf("kind %d: doc id %s, NIP-01 hash %s", e.Kind, e.ID, e.GetID())
		}
		if ok, err := e.CheckSignature(); !ok || err != nil {
			t.Errorf("kind %d: signature: %v", e.Kind, err)
		}
		if _, err := identity.ValidateClaim(e); err != nil {
			t.Errorf("kind %d: identity.ValidateClaim refuses the doc's example: %v", e.Kind, err)
		}
	}
	claim, rot := parseEvent(t, docClaim), parseEvent(t, docRotation)
	d := specConsentDigest("alice", claim.ID, rot.PubKey)
	if hex.EncodeToString(d[:]) != docConsentDigest {
		t.Errorf("consent digest: doc %s, spec %x", docConsentDigest, d)
	}
	consent := tagsNamed(rot.Tags, "consent")[0][1]
	if !specVerifySig(t, docKey1Pub, d, consent) {
		t.Error("doc rotation's consent is not key 1's signature of the consent digest")
	}
	// The revocation names the rotation, the current claim.
	rev := parseEvent(t, docRevocation)
	if tagsNamed(rev.Tags, "e")[0][1] != rot.ID {
		t.Error("doc revocation does not name the rotation")
	}
	if _, err := identity.ValidateChain([]*nostr.Event{claim, rot, rev}); err != nil {
		t.Errorf("identity.ValidateChain refuses the doc's example chain: %v", err)
	}
}

// TestConsentDigest compares the doc's digest with identity's, and checks
// that identity.Rotate's consent tag is the old key's signature of the
// digest computed from the doc.
func TestConsentDigest(t *testing.T) {
	cases := [][3]string{
		{"alice", strings.Repeat("ab", 32), docKey2Pub},
		{"a", strings.Repeat("00", 32), docKey1Pub},
		{"x_y-z.0", strings.Repeat("f0", 32), strings.Repeat("1", 64)},
		{strings.Repeat("z", 32), strings.Repeat("9", 64), strings.Repeat("e", 64)},
	}
	for _, c := range cases {
		if got, want := identity.RotationConsentDigest(c[0], c[1], c[2]), specConsentDigest(c[0], c[1], c[2]); got != want {
			t.Errorf("%q: code %x, spec %x", c[0], got, want)
		}
	}

	k1, k3 := secretN(t, 1), secretN(t, 3)
	first, err := identity.NewClaim(k1, identity.ClaimParams{Handle: "bob", CreatedAt: time.Unix(1767225600, 0)})
	if err != nil {
		t.Fatal(err)
	}
	fc, err := identity.ValidateClaim(first)
	if err != nil {
		t.Fatal(err)
	}
	rot, err := identity.Rotate(k1, k3, fc, identity.ClaimParams{Handle: "bob", CreatedAt: time.Unix(1767312000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	prev := tagsNamed(rot.Tags, "prev")
	cons := tagsNamed(rot.Tags, "consent")
	if len(prev) != 1 || len(cons) != 1 || len(prev[0]) != 3 || len(cons[0]) != 2 {
		t.Fatalf("rotation tags: %v", rot.Tags)
	}
	if prev[0][1] != first.ID || prev[0][2] != k1.PublicKey() {
		t.Errorf("prev tag %v, want [prev %s %s]", prev[0], first.ID, k1.PublicKey())
	}
	if !hex128.MatchString(cons[0][1]) {
		t.Errorf("consent %q is not 128 lowercase hex", cons[0][1])
	}
	if !specVerifySig(t, k1.PublicKey(), specConsentDigest("bob", first.ID, rot.PubKey), cons[0][1]) {
		t.Error("identity.Rotate's consent does not verify over the doc's consent digest")
	}

	// The other way: a rotation whose consent was signed here, from the
	// doc's digest, is accepted by identity.ValidateClaim.
	sk1, _ := btcec.PrivKeyFromBytes(append(make([]byte, 31), 1))
	d := specConsentDigest("bob", first.ID, k3.PublicKey())
	sig, err := schnorr.Sign(sk1, d[:])
	if err != nil {
		t.Fatal(err)
	}
	own := &nostr.Event{Kind: 3780, CreatedAt: 1767312000, Tags: nostr.Tags{
		{"consent", hex.EncodeToString(sig.Serialize())},
		{"prev", first.ID, k1.PublicKey()},
		{"n", "bob"},
	}}
	if err := k3.Sign(own); err != nil {
		t.Fatal(err)
	}
	if _, err := identity.ValidateClaim(own); err != nil {
		t.Errorf("identity refuses a rotation with a consent over the doc's digest: %v", err)
	}
	if _, err := identity.ValidateChain([]*nostr.Event{own, first}); err != nil {
		t.Errorf("identity.ValidateChain: %v", err)
	}
}

// TestClaimTags checks the tag tables of claims, rotations and revocations
// on events built by identity's builders.
func TestClaimTags(t *testing.T) {
	k1, k2 := secretN(t, 1), secretN(t, 2)
	ln := "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619"
	relays := []string{"wss://relay.alice.example"}
	multi, err := identity.NewClaim(k2, identity.ClaimParams{Handle: "dave", Relays: []string{"wss://a.example", "ws://127.0.0.1:7777/x"}})
	if err != nil {
		t.Fatal(err)
	}
	checkClaimTags(t, "claim with two relays", multi, k2.PublicKey(), "dave", "", []string{"wss://a.example", "ws://127.0.0.1:7777/x"})
	first, err := identity.NewClaim(k1, identity.ClaimParams{Handle: "  @Alice ", LNNode: ln, Relays: relays, CreatedAt: time.Unix(1767225600, 0)})
	if err != nil {
		t.Fatal(err)
	}
	checkClaimTags(t, "claim", first, k1.PublicKey(), "alice", ln, relays)
	if len(tagsNamed(first.Tags, "prev"))+len(tagsNamed(first.Tags, "consent")) != 0 {
		t.Errorf("first claim carries prev/consent: %v", first.Tags)
	}
	// The doc's example claim has exactly these tags and ids, so the builder
	// reproduces it byte for byte (id only: signatures are randomised).
	if doc := parseEvent(t, docClaim); first.ID != doc.ID {
		t.Errorf("identity.NewClaim of the doc's example: id %s, doc %s\n tags %v", first.ID, doc.ID, first.Tags)
	}

	fc, _ := identity.ValidateClaim(first)
	rot, err := identity.Rotate(k1, k2, fc, identity.ClaimParams{Handle: "alice", Relays: relays[:1], CreatedAt: time.Unix(1767312000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	checkClaimTags(t, "rotation", rot, k2.PublicKey(), "alice", "", relays[:1])
	if doc := parseEvent(t, docRotation); rot.ID == doc.ID {
		t.Log("rotation id equals the doc's (consent happened to match)")
	} else {
		// The consent tag differs (fresh randomness); the rest must match.
		if got, want := withoutTag(rot.Tags, "consent"), withoutTag(doc.Tags, "consent"); !tagsEqual(got, want) {
			t.Errorf("identity.Rotate of the doc's example: tags %v, doc %v", got, want)
		}
	}

	rc, _ := identity.ValidateClaim(rot)
	rev, err := identity.NewRevocation(k2, rc, "key retired", time.Unix(1767398400, 0))
	if err != nil {
		t.Fatal(err)
	}
	if rev.Kind != 3781 || rev.PubKey != k2.PublicKey() || rev.Content != "key retired" {
		t.Errorf("revocation: kind %d pubkey %s content %q", rev.Kind, rev.PubKey, rev.Content)
	}
	if n := tagsNamed(rev.Tags, "n"); len(n) != 1 || len(n[0]) != 2 || n[0][1] != "alice" {
		t.Errorf("revocation n tags %v", n)
	}
	if e := tagsNamed(rev.Tags, "e"); len(e) != 1 || len(e[0]) < 2 || e[0][1] != rot.ID {
		t.Errorf("revocation e tags %v, want the rotation %s", e, rot.ID)
	}
	checkOnlyTags(t, "revocation", rev, "n", "e", "alt")
	if doc := parseEvent(t, docRevocation); rev.ID != doc.ID {
		t.Errorf("identity.NewRevocation of the doc's example: id %s, doc %s (tags %v)", rev.ID, doc.ID, rev.Tags)
	}

	// Tag order does not matter and unknown tags are ignored: a claim built
	// here from the table, in another order and with an extra tag.
	own := &nostr.Event{Kind: 3780, CreatedAt: 1767225600, Tags: nostr.Tags{
		{"x-unknown", "1"}, {"relay", "wss://r.example"}, {"ln", ln}, {"n", "carol"},
	}}
	if err := k1.Sign(own); err != nil {
		t.Fatal(err)
	}
	c, err := identity.ValidateClaim(own)
	if err != nil {
		t.Fatalf("identity refuses a claim built from the doc's table: %v", err)
	}
	if c.Handle != "carol" || c.LNNode != ln || len(c.Relays) != 1 {
		t.Errorf("parsed %+v", c)
	}
	// Validators do not normalise: a non-canonical handle is invalid.
	bad := &nostr.Event{Kind: 3780, CreatedAt: 1767225600, Tags: nostr.Tags{{"n", "Carol"}}}
	if err := k1.Sign(bad); err != nil {
		t.Fatal(err)
	}
	if _, err := identity.ValidateClaim(bad); err == nil {
		t.Error("identity accepts the non-canonical handle Carol")
	}
}

func checkClaimTags(t *testing.T, what string, e *nostr.Event, pub, h, ln string, relays []string) {
	t.Helper()
	if e.Kind != 3780 || e.PubKey != pub || e.Content != "" {
		t.Errorf("%s: kind %d pubkey %s content %q", what, e.Kind, e.PubKey, e.Content)
	}
	if ok, _ := e.CheckSignature(); !ok || e.GetID() != e.ID {
		t.Errorf("%s: id/signature", what)
	}
	n := tagsNamed(e.Tags, "n")
	if len(n) != 1 || len(n[0]) != 2 || n[0][1] != h || !handle.MatchString(n[0][1]) {
		t.Errorf("%s: n tags %v", what, n)
	}
	l := tagsNamed(e.Tags, "ln")
	switch {
	case ln == "" && len(l) != 0:
		t.Errorf("%s: unexpected ln %v", what, l)
	case ln != "" && (len(l) != 1 || len(l[0]) != 2 || l[0][1] != ln || !lnKey.MatchString(l[0][1])):
		t.Errorf("%s: ln tags %v", what, l)
	}
	r := tagsNamed(e.Tags, "relay")
	if len(r) != len(relays) {
		t.Errorf("%s: relay tags %v, want %v", what, r, relays)
	}
	for i := range r {
		if i < len(relays) && (len(r[i]) != 2 || r[i][1] != relays[i]) {
			t.Errorf("%s: relay tag %v, want %s", what, r[i], relays[i])
		}
	}
	if a := tagsNamed(e.Tags, "alt"); len(a) > 1 {
		t.Errorf("%s: %d alt tags", what, len(a))
	}
	checkOnlyTags(t, what, e, "n", "ln", "relay", "alt", "prev", "consent")
}

func checkOnlyTags(t *testing.T, what string, e *nostr.Event, names ...string) {
	t.Helper()
	for _, tg := range e.Tags {
		ok := false
		for _, n := range names {
			ok = ok || (len(tg) > 0 && tg[0] == n)
		}
		if !ok {
			t.Errorf("%s: tag %v is not in the doc's table", what, tg)
		}
	}
}

func withoutTag(tags nostr.Tags, name string) nostr.Tags {
	var out nostr.Tags
	for _, tg := range tags {
		if len(tg) == 0 || tg[0] != name {
			out = append(out, tg)
		}
	}
	return out
}

func tagsEqual(a, b nostr.Tags) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if len(a[i]) != len(b[i]) {
			return false
		}
		for j := range a[i] {
			if a[i][j] != b[i][j] {
				return false
			}
		}
	}
	return true
}
