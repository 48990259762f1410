package identity

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestNIP05ServeAndResolve(t *testing.T) {
	alice, root := mustKey(t), mustKey(t)
	h := NewNIP05Handler(nil)
	if err := h.Set("@Alice", alice.PublicKey(), []string{"wss://relay.example.com"}); err != nil {
		t.Fatal(err)
	}
	if err := h.Set("_", root.PublicKey(), nil); err != nil {
		t.Fatal(err)
	}
	if err := h.Set("bad name", alice.PublicKey(), nil); err == nil {
		t.Fatal("bad handle accepted")
	}
	mux := http.NewServeMux()
	mux.Handle(NIP05Path, h)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	// Served: raw HTTP check of the document and the CORS header.
	resp, err := http.Get(srv.URL + NIP05Path + "?name=alice")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatal("no CORS header")
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	var doc struct {
		Names  map[string]string   `json:"names"`
		Relays map[string][]string `json:"relays"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if doc.Names["alice"] != alice.PublicKey() || len(doc.Names) != 1 || doc.Relays[alice.PublicKey()][0] != "wss://relay.example.com" {
		t.Fatalf("document %+v", doc)
	}

	// Resolved over real HTTP through the Resolver.
	r := &Resolver{Scheme: "http", HostFor: func(string) string { return srv.Listener.Addr().String() }, Timeout: 5 * time.Second}
	ctx := context.Background()
	res, err := r.Resolve(ctx, "Alice@Example.com")
	if err != nil {
		t.Fatal(err)
	}
	if res.PubKey != alice.PublicKey() || res.Name != "alice" || res.Domain != "example.com" || len(res.Relays) != 1 {
		t.Fatalf("resolved %+v", res)
	}
	res, err = r.Resolve(ctx, "example.com") // bare domain = _@domain
	if err != nil || res.PubKey != root.PublicKey() {
		t.Fatalf("_@domain: %+v %v", res, err)
	}
	if _, err := r.Resolve(ctx, "nobody@example.com"); !errors.Is(err, ErrNIP05) || !strings.Contains(err.Error(), "does not list") {
		t.Fatalf("unknown name: %v", err)
	}
	h.Remove("alice")
	if _, err := r.Resolve(ctx, "alice@example.com"); err == nil {
		t.Fatal("removed name still resolves")
	}
	for _, bad := range []string{"alice@", "@example.com", "a..b@example.com", "alice@localhost", "alice@exa mple.com"} {
		if _, err := r.Resolve(ctx, bad); !errors.Is(err, ErrNIP05) {
			t.Errorf("Resolve(%q) = %v", bad, err)
		}
	}
}

func TestNIP05ResolverRefusesBadAnswers(t *testing.T) {
	good := mustKey(t).PublicKey()
	var hits atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte(`{"names":{"alice":"` + good + `"}}`))
	})
	mux.HandleFunc(NIP05Path, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("name") {
		case "redirect":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case "big":
			_, _ = w.Write([]byte(`{"names":{"big":"` + good + `"},"pad":"` + strings.Repeat("x", 100<<10) + `"}`))
		case "npub":
			_, _ = w.Write([]byte(`{"names":{"npub":"` + nip19Npub + `"}}`))
		case "notjson":
			_, _ = w.Write([]byte(`<html>`))
		case "slow":
			time.Sleep(2 * time.Second)
		case "oddrelays": // a malformed optional field, and another name's odd entry
			_, _ = w.Write([]byte(`{"names":{"oddrelays":"` + good + `","bot":42},"relays":"wss://a.example"}`))
		case "oddlist":
			_, _ = w.Write([]byte(`{"names":{"oddlist":"` + good + `"},"relays":{"` + good + `":"wss://a.example","x":[1]}}`))
		case "relays":
			_, _ = w.Write([]byte(`{"names":{"relays":"` + good + `"},"relays":{"` + good + `":["wss://ok.example","https://not-a-relay.example","javascript:alert(1)"]}}`))
		default:
			http.NotFound(w, r)
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	r := &Resolver{Scheme: "http", HostFor: func(string) string { return srv.Listener.Addr().String() },
		Timeout: 500 * time.Millisecond, MaxBytes: 16 << 10}
	ctx := context.Background()
	cases := map[string]string{
		"redirect": "redirect",
		"big":      "larger than",
		"npub":     "invalid pubkey",
		"notjson":  "invalid JSON",
		"slow":     "deadline",
		"missing":  "HTTP 404",
	}
	for name, reason := range cases {
		_, err := r.Resolve(ctx, name+"@example.com")
		if !errors.Is(err, ErrNIP05) || !strings.Contains(err.Error(), reason) {
			t.Errorf("%s: err = %v, want %q", name, err, reason)
		}
	}
	if hits.Load() != 0 {
		t.Fatal("resolver followed a redirect")
	}
	res, err := r.Resolve(ctx, "relays@example.com")
	if err != nil || len(res.Relays) != 1 || res.Relays[0] != "wss://ok.example" {
		t.Fatalf("relay filtering: %+v %v", res, err)
	}
	// What the document says besides the name asked does not fail it.
	for _, name := range []string{"oddrelays", "oddlist"} {
		res, err := r.Resolve(ctx, name+"@example.com")
		if err != nil || res.PubKey != good || len(res.Relays) != 0 {
			t.Errorf("%s: %+v %v, want the key without relays", name, res, err)
		}
	}
	// A caller's client with its own redirect policy is still not followed.
	r.Client = &http.Client{}
	if _, err := r.Resolve(ctx, "redirect@example.com"); err == nil || hits.Load() != 0 {
		t.Fatalf("custom client followed redirect: %v", err)
	}
}

// An identifier is lowercased in ASCII only: U+0130 (İ), whose Unicode lower
// case is "i", must not turn "alİce@exİmple.com" into alice@example.com.
func TestParseNIP05RefusesNonASCII(t *testing.T) {
	for _, in := range []string{"alİce@example.com", "alice@exİmple.com", "exİmple.com"} {
		if name, domain, err := ParseNIP05(in); !errors.Is(err, ErrNIP05) {
			t.Errorf("ParseNIP05(%q) = %q, %q, %v; want refused", in, name, domain, err)
		}
	}
	if name, domain, err := ParseNIP05("ALICE@Example.COM"); err != nil || name != "alice" || domain != "example.com" {
		t.Errorf("ParseNIP05 upper case: %q %q %v", name, domain, err)
	}
}
