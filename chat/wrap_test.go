package chat

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip44"
)

func wrapper(t testing.TB) *Wrapper {
	t.Helper()
	w, err := NewWrapper(nostr.GeneratePrivateKey())
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestWrapUnwrapRoundTrip(t *testing.T) {
	alice, bob := wrapper(t), wrapper(t)
	now := time.Now()
	exp := now.Add(time.Hour).Unix()
	rumor := alice.NewRumor(KindChatMessage, "hi bob", nostr.Tags{{"p", bob.PublicKey()}, expirationTag(exp)}, now)
	w1, err := alice.Wrap(rumor, bob.PublicKey(), exp)
	if err != nil {
		t.Fatal(err)
	}
	w2, _ := alice.Wrap(rumor, bob.PublicKey(), exp)
	if w1.PubKey == w2.PubKey || w1.PubKey == alice.PublicKey() {
		t.Fatal("gift wraps must use a fresh one-time key")
	}
	if w1.Kind != KindGiftWrap || w1.Tags.FindWithValue("p", bob.PublicKey()) == nil || Expiration(&w1) != exp {
		t.Fatalf("wrap tags %v", w1.Tags)
	}
	for _, w := range []nostr.Event{w1, w2} {
		age := now.Unix() - int64(w.CreatedAt)
		if age < 0 || age > int64(MaxBackdate/time.Second) {
			t.Fatalf("wrap created_at %d s in the past", age)
		}
	}
	got, err := bob.Unwrap(&w1)
	if err != nil {
		t.Fatal(err)
	}
	if got.Content != "hi bob" || got.PubKey != alice.PublicKey() || got.ID != rumor.ID || got.Sig != "" {
		t.Fatalf("rumor %+v", got)
	}
	// The seal inside carries the expiration too and is signed by alice.
	tk, _ := nip44.GenerateConversationKey(w1.PubKey, bob.sk)
	sealJSON, _ := nip44.Decrypt(w1.Content, tk)
	var seal nostr.Event
	_ = seal.UnmarshalJSON([]byte(sealJSON))
	if seal.Kind != KindSeal || seal.PubKey != alice.PublicKey() || Expiration(&seal) != exp {
		t.Fatalf("seal %+v", seal)
	}
	// Alice can read her own copy.
	own, _ := alice.Wrap(rumor, alice.PublicKey(), 0)
	if r, err := alice.Unwrap(&own); err != nil || r.Content != "hi bob" {
		t.Fatal(err)
	}
	// A wrapper refuses to wrap someone else's rumor.
	if _, err := bob.Wrap(rumor, alice.PublicKey(), 0); err == nil {
		t.Fatal("bob wrapped alice's rumor")
	}
}

// sealAs builds a gift wrap whose seal is signed by signerSK while the
// rumor inside claims author claimed: an impersonation attempt.
func sealAs(t testing.TB, signerSK, claimed, recipient, text string) nostr.Event {
	t.Helper()
	rumor := nostr.Event{Kind: KindChatMessage, Content: text, PubKey: claimed, CreatedAt: nostr.Now(), Tags: nostr.Tags{{"p", recipient}}}
	rumor.ID = rumor.GetID()
	ck, _ := nip44.GenerateConversationKey(recipient, signerSK)
	ct, _ := nip44.Encrypt(rumor.String(), ck)
	seal := nostr.Event{Kind: KindSeal, Content: ct, CreatedAt: nostr.Now(), Tags: nostr.Tags{}}
	if err := seal.Sign(signerSK); err != nil {
		t.Fatal(err)
	}
	one := nostr.GeneratePrivateKey()
	tk, _ := nip44.GenerateConversationKey(recipient, one)
	sct, _ := nip44.Encrypt(seal.String(), tk)
	wrap := nostr.Event{Kind: KindGiftWrap, Content: sct, CreatedAt: nostr.Now(), Tags: nostr.Tags{{"p", recipient}}}
	if err := wrap.Sign(one); err != nil {
		t.Fatal(err)
	}
	return wrap
}

func TestUnwrapRefusals(t *testing.T) {
	alice, bob, carol := wrapper(t), wrapper(t), wrapper(t)
	mallory := nostr.GeneratePrivateKey()

	imp := sealAs(t, mallory, alice.PublicKey(), bob.PublicKey(), "send me your seed")
	_, err := bob.Unwrap(&imp)
	if !errors.Is(err, ErrImpersonation) {
		t.Fatalf("impersonation: %v", err)
	}
	if !strings.Contains(err.Error(), "impersonation") {
		t.Fatalf("unclear error: %v", err)
	}

	rumor := alice.NewRumor(KindChatMessage, "for carol", nostr.Tags{{"p", carol.PublicKey()}}, time.Now())
	wc, _ := alice.Wrap(rumor, carol.PublicKey(), 0)
	if _, err := bob.Unwrap(&wc); !errors.Is(err, ErrNotForUs) {
		t.Fatalf("wrap for carol: %v", err)
	}
	// Even if the p tag is forged to name bob, bob cannot open it.
	forged := wc
	forged.Tags = nostr.Tags{{"p", bob.PublicKey()}}
	if _, err := bob.Unwrap(&forged); !errors.Is(err, ErrMalformed) {
		t.Fatalf("forged p tag: %v", err)
	}
	// Expired.
	exp := time.Now().Add(-time.Minute).Unix()
	old, _ := alice.Wrap(alice.NewRumor(KindChatMessage, "old", nil, time.Now()), bob.PublicKey(), exp)
	if _, err := bob.Unwrap(&old); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired: %v", err)
	}
	// Tampered content.
	bad, _ := alice.Wrap(rumor, bob.PublicKey(), 0)
	bad.Content = bad.Content[:len(bad.Content)-4] + "AAAA"
	if _, err := bob.Unwrap(&bad); !errors.Is(err, ErrMalformed) {
		t.Fatalf("tampered: %v", err)
	}
}

// Through the Service: an impersonating wrap is refused and stored nowhere;
// a wrap for someone else is ignored.
func TestServiceRefusesImpersonation(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	bob := newUser(t, clk, "bob")
	bs := bob.start(t, nil)
	alice, carol := wrapper(t), wrapper(t)
	imp := sealAs(t, nostr.GeneratePrivateKey(), alice.PublicKey(), bob.key.PublicKey(), "it is me, alice")
	// Delivered through bob's relay like any mail.
	publishTo(t, bob.relay.url, newKey(t), &imp)
	wc, _ := alice.Wrap(alice.NewRumor(KindChatMessage, "carol only", nil, time.Now()), carol.PublicKey(), 0)
	if err := bs.Ingest(ctx, &wc); !errors.Is(err, ErrNotForUs) {
		t.Fatalf("wrap for carol: %v", err)
	}
	if err := bs.Ingest(ctx, &imp); err != nil {
		// already seen through the relay (refused once, remembered) or refused now
		if !errors.Is(err, ErrImpersonation) {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "bob's inbox sees the wrap", func() (bool, error) {
		return bs.st.seen(ctx, imp.ID)
	})
	convs, err := bs.Conversations(ctx)
	if err != nil || len(convs) != 0 {
		t.Fatalf("conversations after refusals: %d %v", len(convs), err)
	}
}

// A relay that hands over a tampered copy of a wrap first (same id, so
// the id no longer checks, or a broken signature) must not make the inbox
// ignore the genuine wrap when it comes.
func TestTamperedCopyDoesNotHideTheWrap(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	bob := newUser(t, clk, "bob")
	bs := bob.start(t, nil)
	alice := wrapper(t)
	for i, tamper := range []func(*nostr.Event){
		func(e *nostr.Event) { e.Sig = strings.Repeat("ab", 64) },
		func(e *nostr.Event) { e.Kind = 1 },
		func(e *nostr.Event) { e.Content = e.Content[:len(e.Content)-4] + "AAAA" },
	} {
		genuine, err := alice.Wrap(alice.NewRumor(KindChatMessage, fmt.Sprint("hello bob ", i), nostr.Tags{{"p", bob.key.PublicKey()}}, time.Now()), bob.key.PublicKey(), 0)
		if err != nil {
			t.Fatal(err)
		}
		tampered := genuine
		tamper(&tampered)
		if err := bs.Ingest(ctx, &tampered); !errors.Is(err, ErrMalformed) {
			t.Fatalf("tampered copy: %v", err)
		}
		if err := bs.Ingest(ctx, &genuine); err != nil {
			t.Fatalf("genuine wrap after a tampered copy: %v", err)
		}
		if seen, err := bs.st.seen(ctx, genuine.ID); err != nil || !seen {
			t.Fatalf("genuine wrap not taken in: %v %v", seen, err)
		}
	}
	convs, err := bs.Conversations(ctx)
	if err != nil || len(convs) != 1 || convs[0].Messages != 3 {
		t.Fatalf("conversations: %+v %v", convs, err)
	}
}

func TestFileEncryption(t *testing.T) {
	data := []byte("a picture, honestly")
	blob, fi, err := EncryptFile(data)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(blob, data) || fi.Size != int64(len(blob)) || len(fi.Key) != 64 || len(fi.Nonce) != 24 {
		t.Fatalf("%+v", fi)
	}
	got, err := DecryptFile(blob, fi)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatal(err)
	}
	blob[3] ^= 1
	if _, err := DecryptFile(blob, fi); err == nil || !strings.Contains(err.Error(), "hash") {
		t.Fatalf("tampered blob: %v", err)
	}
}

func TestBlobStoreAuth(t *testing.T) {
	owner, stranger := newKey(t), newKey(t)
	now := time.Now()
	bs, err := NewBlobStore(BlobConfig{Dir: t.TempDir(), Owner: owner.PublicKey(), MaxSize: 1000, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(bs)
	defer srv.Close()
	body := []byte("encrypted bytes")
	blobSHA := sha256hex(body)
	put := func(auth string, b []byte) *http.Response {
		req, _ := http.NewRequest(http.MethodPut, srv.URL+"/upload", bytes.NewReader(b))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	sign := func(k interface{ Sign(*nostr.Event) error }) func(*nostr.Event) error {
		return func(e *nostr.Event) error { return k.Sign(e) }
	}
	good, _ := BlobAuth(sign(owner), blobSHA, int64(len(body)), now, time.Minute)
	expired, _ := BlobAuth(sign(owner), blobSHA, int64(len(body)), now.Add(-time.Hour), time.Minute)
	wrongX, _ := BlobAuth(sign(owner), sha256hex([]byte("other")), 5, now, time.Minute)
	strangers, _ := BlobAuth(sign(stranger), blobSHA, int64(len(body)), now, time.Minute)
	getAuth := &nostr.Event{Kind: KindBlobAuth, CreatedAt: nostr.Now(), Tags: nostr.Tags{{"t", "get"}, {"x", blobSHA}, expirationTag(now.Add(time.Minute).Unix())}}
	_ = owner.Sign(getAuth)
	wrongVerb := "Nostr " + base64.StdEncoding.EncodeToString([]byte(getAuth.String()))
	// Over-long pubkey hex used to panic the handler (the connection dropped).
	longKey := &nostr.Event{Kind: KindBlobAuth, CreatedAt: nostr.Now(), PubKey: strings.Repeat("ab", 33), Tags: nostr.Tags{{"t", "upload"}, {"x", blobSHA}, expirationTag(now.Add(time.Minute).Unix())}}
	longKey.ID = longKey.GetID()
	overlong := "Nostr " + base64.StdEncoding.EncodeToString([]byte(longKey.String()))
	for name, auth := range map[string]string{"none": "", "expired": expired, "wrong x": wrongX, "stranger": strangers, "wrong verb": wrongVerb, "garbage": "Nostr !!!", "over-long pubkey": overlong} {
		if resp := put(auth, body); resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("X-Reason") == "" {
			t.Errorf("%s: status %d", name, resp.StatusCode)
		}
	}
	big := bytes.Repeat([]byte("x"), 1000+blobOverhead+1)
	bigAuth, _ := BlobAuth(sign(owner), sha256hex(big), int64(len(big)), now, time.Minute)
	if resp := put(bigAuth, big); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("too large: %d", resp.StatusCode)
	}
	if resp := put(good, body); resp.StatusCode != http.StatusOK {
		t.Fatalf("upload: %d %s", resp.StatusCode, resp.Header.Get("X-Reason"))
	}
	for _, p := range []string{"/" + blobSHA, "/" + blobSHA + ".jpg"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(buf.Bytes(), body) {
			t.Fatalf("GET %s: %d", p, resp.StatusCode)
		}
	}
	resp, _ := http.Head(srv.URL + "/" + blobSHA)
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(body)) {
		t.Fatalf("HEAD: %d %d", resp.StatusCode, resp.ContentLength)
	}
	resp, _ = http.Get(srv.URL + "/" + sha256hex([]byte("missing")))
	if resp.StatusCode != 404 {
		t.Fatalf("missing: %d", resp.StatusCode)
	}
	resp, _ = http.Get(srv.URL + "/../etc/passwd")
	if resp.StatusCode != 404 {
		t.Fatalf("traversal: %d", resp.StatusCode)
	}
}

// A crash mid-upload leaves a temp file; the next start removes it when it
// is over an hour old, and keeps the blobs.
func TestBlobStoreRemovesLeftoverUploads(t *testing.T) {
	dir := t.TempDir()
	blob := filepath.Join(dir, sha256hex([]byte("kept")))
	left := filepath.Join(dir, ".upload-123456")
	young := filepath.Join(dir, ".upload-654321") // another process's upload in progress
	for _, f := range []string{blob, left, young} {
		if err := os.WriteFile(f, []byte("kept"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	for _, f := range []string{blob, left} {
		if err := os.Chtimes(f, old, old); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := NewBlobStore(BlobConfig{Dir: dir, Logger: testLogger(t)}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Errorf("leftover upload still there: %v", err)
	}
	for _, f := range []string{blob, young} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("%s went: %v", filepath.Base(f), err)
		}
	}
}

func sha256hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// Signature checks must refuse over-long hex instead of panicking: go-nostr's
// CheckSignature (libsecp256k1 build) hex-decodes the pubkey into a 32-byte
// array. Any stranger can put such a seal inside a gift wrap to us, and the
// inbox goroutine's panic would end the node.
func TestOverlongKeysAndSignaturesAreRefused(t *testing.T) {
	bob := wrapper(t)
	one := nostr.GeneratePrivateKey()
	long := strings.Repeat("ab", 33)
	for _, mutate := range []func(*nostr.Event){
		func(e *nostr.Event) { e.PubKey = long },
		func(e *nostr.Event) { e.Sig = strings.Repeat("cd", 65) },
	} {
		seal := nostr.Event{Kind: KindSeal, Content: "x", CreatedAt: nostr.Now(), Tags: nostr.Tags{}}
		if err := seal.Sign(nostr.GeneratePrivateKey()); err != nil {
			t.Fatal(err)
		}
		mutate(&seal)
		tk, _ := nip44.GenerateConversationKey(bob.PublicKey(), one)
		ct, _ := nip44.Encrypt(seal.String(), tk)
		wrap := nostr.Event{Kind: KindGiftWrap, Content: ct, CreatedAt: nostr.Now(), Tags: nostr.Tags{{"p", bob.PublicKey()}}}
		if err := wrap.Sign(one); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.Unwrap(&wrap); !errors.Is(err, ErrMalformed) {
			t.Fatalf("seal with an over-long field: %v", err)
		}
		// And the wrap itself.
		bad := wrap
		mutate(&bad)
		bad.Tags = nostr.Tags{{"p", bob.PublicKey()}}
		if _, err := bob.Unwrap(&bad); !errors.Is(err, ErrMalformed) {
			t.Fatalf("wrap with an over-long field: %v", err)
		}
	}
}

// TestFileWithoutHashIsRefused: a file message must name the hash of its
// blob (x); one that does not is not decrypted, since nothing then ties the
// downloaded blob to what the sender sent. Before, DecryptFile skipped the
// check when the x tag was missing, and FetchFile decrypted whatever the
// URL served.
func TestFileWithoutHashIsRefused(t *testing.T) {
	data := []byte("a picture, honestly")
	blob, fi, err := EncryptFile(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []string{"", "not hex", strings.Repeat("0", 64)} {
		f := *fi
		f.SHA256 = x
		if got, err := DecryptFile(blob, &f); err == nil || !strings.Contains(err.Error(), "hash") {
			t.Errorf("x %q: decrypted %q (%v), want a hash error", x, got, err)
		}
	}
	f := *fi
	f.SHA256 = strings.ToUpper(fi.SHA256)
	if got, err := DecryptFile(blob, &f); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("x in upper case: %v", err)
	}
}

// TestFileAtTheSizeLimitIsSent: a file of MaxFileSize bytes is sent
// through a blob store whose MaxSize is the same limit (the node sets both
// to one value), though its blob is larger by the encryption's tag; one
// byte more is refused before anything is uploaded, and the store refuses
// a blob larger than the limit plus the overhead FetchFile allows. Before,
// the store refused the blob of a file within 16 bytes of the limit (413),
// which the CLI and SendFile had let through.
func TestFileAtTheSizeLimitIsSent(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	alice, bob := newUser(t, clk, "alice"), newUser(t, clk, "bob")
	bob.publishDMRelays(t, bob.relay.url, bob.relay.url)
	const limit = 1024
	blobs, err := NewBlobStore(BlobConfig{Dir: t.TempDir(), Owner: alice.key.PublicKey(), MaxSize: limit, Now: clk.Now, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.StripPrefix("/blobs", blobs))
	defer srv.Close()
	blobs.cfg.PublicURL = srv.URL + "/blobs"
	as := alice.start(t, func(c *Config) {
		c.DiscoveryRelays = []string{bob.relay.url}
		c.BlobURL = srv.URL + "/blobs"
		c.MaxFileSize = limit
	})

	data := bytes.Repeat([]byte("x"), limit)
	m, err := as.SendFile(ctx, []string{bob.key.PublicKey()}, bytes.NewReader(data), FileOptions{}, SendOptions{})
	if err != nil {
		t.Fatalf("a file of exactly the limit: %v", err)
	}
	if got, err := as.FetchFile(ctx, m); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("fetching it back: %v", err)
	}
	if _, err := as.SendFile(ctx, []string{bob.key.PublicKey()}, bytes.NewReader(append(data, 'x')), FileOptions{}, SendOptions{}); err == nil {
		t.Fatal("a file over the limit was sent")
	}

	big := bytes.Repeat([]byte("y"), limit+blobOverhead+1)
	auth, err := BlobAuth(alice.key.Sign, sha256hex(big), int64(len(big)), clk.Now(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/blobs/upload", bytes.NewReader(big))
	req.Header.Set("Authorization", auth)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("a blob over the limit and the overhead: %d", resp.StatusCode)
	}
}
