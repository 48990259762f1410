package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// NIP05Path is where the well-known document is served.
const NIP05Path = "/.well-known/nostr.json"

// ErrNIP05 wraps every resolution failure.
var ErrNIP05 = errors.New("identity: nip05")

// nip05Doc is the NIP-05 JSON document.
type nip05Doc struct {
	Names  map[string]string   `json:"names"`
	Relays map[string][]string `json:"relays,omitempty"`
}

// NIP05Handler serves /.well-known/nostr.json for the node's local handles.
// It is safe for concurrent use; the node updates it as claims change.
type NIP05Handler struct {
	mu      sync.RWMutex
	entries map[string]nip05Entry
	Logger  *slog.Logger
}

type nip05Entry struct {
	pubkey string
	relays []string
}

// NewNIP05Handler returns an empty handler.
func NewNIP05Handler(log *slog.Logger) *NIP05Handler {
	return &NIP05Handler{entries: map[string]nip05Entry{}, Logger: log}
}

// Set publishes handle (normalised; "_" is allowed for the domain's root
// identity) for pubkey (hex) with its relays.
func (h *NIP05Handler) Set(handle, pubkey string, relays []string) error {
	name := handle
	if name != "_" {
		var err error
		if name, err = NormalizeHandle(handle); err != nil {
			return err
		}
	}
	if !nostr.IsValidPublicKey(pubkey) {
		return fmt.Errorf("%w: %q", ErrInvalidPublicKey, pubkey)
	}
	for _, r := range relays {
		if err := CheckRelayURL(r); err != nil {
			return fmt.Errorf("identity: nip05 set %s: %w", name, err)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.entries[name] = nip05Entry{pubkey: pubkey, relays: append([]string(nil), relays...)}
	return nil
}

// Remove unpublishes handle.
func (h *NIP05Handler) Remove(handle string) {
	if n, err := NormalizeHandle(handle); err == nil {
		handle = n
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.entries, handle)
}

// ServeHTTP answers GET/HEAD /.well-known/nostr.json?name=<handle> with
// {"names":{name:pubkey},"relays":{pubkey:[...]}}, or all local names when
// name is absent. Unknown names get {"names":{}} with status 200 (what
// NIP-05 clients expect). CORS: Access-Control-Allow-Origin: *.
func (h *NIP05Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Access-Control-Allow-Origin", "*")
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodOptions:
		hdr.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
		w.WriteHeader(http.StatusNoContent)
		return
	default:
		hdr.Set("Allow", "GET, HEAD, OPTIONS")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	doc := nip05Doc{Names: map[string]string{}, Relays: map[string][]string{}}
	add := func(name string, e nip05Entry) {
		doc.Names[name] = e.pubkey
		if len(e.relays) > 0 {
			doc.Relays[e.pubkey] = e.relays
		}
	}
	h.mu.RLock()
	if q, ok := r.URL.Query()["name"]; ok && len(q) > 0 {
		name := lowerASCII(strings.TrimSpace(q[0]))
		if e, ok := h.entries[name]; ok {
			add(name, e)
		}
	} else {
		for n, e := range h.entries {
			add(n, e)
		}
	}
	h.mu.RUnlock()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", "max-age=300")
	if r.Method == http.MethodHead {
		return
	}
	if err := json.NewEncoder(w).Encode(doc); err != nil && h.Logger != nil {
		h.Logger.Debug("nip05: write response", "err", err)
	}
}

// NIP05Result is a resolved identifier.
type NIP05Result struct {
	Name   string // local part ("_" for the root)
	Domain string
	PubKey string   // hex
	Relays []string // valid ws/wss relays the document lists for PubKey
}

// Resolver resolves name@domain identifiers (NIP-05). The zero value is
// ready to use: https, 10 s timeout, 64 KiB limit, no redirects.
type Resolver struct {
	// Client makes the request; its CheckRedirect is ignored (redirects
	// are never followed, as NIP-05 requires). nil means a default client.
	Client *http.Client
	// Scheme is "https" unless set (tests use "http").
	Scheme string
	// HostFor maps the identifier's domain to the host[:port] to dial;
	// nil means the domain itself. Tests point it at an httptest server.
	HostFor func(domain string) string
	// Timeout bounds the whole request; 0 means 10 s.
	Timeout time.Duration
	// MaxBytes bounds the response body; 0 means 64 KiB.
	MaxBytes int64
	// MaxRelays caps the relays returned; 0 means 20.
	MaxRelays int
}

// ParseNIP05 splits "name@domain" (or "domain", meaning "_@domain") into a
// lower-case local part and domain, and checks their syntax.
func ParseNIP05(identifier string) (name, domain string, err error) {
	s := lowerASCII(strings.TrimSpace(identifier))
	if rest, ok := strings.CutPrefix(s, "@"); ok { // "@alice@domain", fediverse style
		if !strings.Contains(rest, "@") {
			return "", "", fmt.Errorf("%w: %q: empty name before the domain (use _@domain for the root)", ErrNIP05, identifier)
		}
		s = rest
	}
	name, domain, found := strings.Cut(s, "@")
	if !found {
		name, domain = "_", s
	}
	if name != "_" {
		if err := ValidateHandle(name); err != nil {
			return "", "", fmt.Errorf("%w: %q: local part: %w", ErrNIP05, identifier, err)
		}
	}
	if err := checkDomain(domain); err != nil {
		return "", "", fmt.Errorf("%w: %q: %w", ErrNIP05, identifier, err)
	}
	return name, domain, nil
}

func checkDomain(d string) error {
	if d == "" || len(d) > 253 {
		return errors.New("domain empty or too long")
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return fmt.Errorf("domain %q has no dot", d)
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || strings.HasPrefix(l, "-") || strings.HasSuffix(l, "-") {
			return fmt.Errorf("domain %q has a bad label %q", d, l)
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("domain %q has the character %q (use punycode for IDNs)", d, r)
			}
		}
	}
	return nil
}

// Resolve fetches https://domain/.well-known/nostr.json?name=name and
// returns the pubkey (and relays) the document gives for name. It refuses
// redirects, bodies over MaxBytes, non-200 answers, invalid JSON and
// invalid pubkeys.
func (r *Resolver) Resolve(ctx context.Context, identifier string) (*NIP05Result, error) {
	name, domain, err := ParseNIP05(identifier)
	if err != nil {
		return nil, err
	}
	timeout, maxBytes, maxRelays := r.Timeout, r.MaxBytes, r.MaxRelays
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if maxBytes <= 0 {
		maxBytes = 64 << 10
	}
	if maxRelays <= 0 {
		maxRelays = 20
	}
	scheme, host := r.Scheme, domain
	if scheme == "" {
		scheme = "https"
	}
	if r.HostFor != nil {
		host = r.HostFor(domain)
	}
	u := url.URL{Scheme: scheme, Host: host, Path: NIP05Path, RawQuery: url.Values{"name": {name}}.Encode()}

	client := &http.Client{}
	if r.Client != nil {
		c := *r.Client
		client = &c
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: build request: %w", ErrNIP05, identifier, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrNIP05, identifier, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return nil, fmt.Errorf("%w: %s: %s answered %d redirect to %q; NIP-05 forbids following redirects",
			ErrNIP05, identifier, domain, resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: %s: %s answered HTTP %d", ErrNIP05, identifier, domain, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: read: %w", ErrNIP05, identifier, err)
	}
	if int64(len(body)) > maxBytes {
		return nil, fmt.Errorf("%w: %s: response larger than %d bytes", ErrNIP05, identifier, maxBytes)
	}
	// Only the name asked and its key's relays are read: what the document
	// says of other names, or a malformed optional "relays", does not fail
	// the lookup (shared documents list many names, some written by hand).
	var doc struct {
		Names  map[string]json.RawMessage `json:"names"`
		Relays json.RawMessage            `json:"relays"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("%w: %s: invalid JSON: %w", ErrNIP05, identifier, err)
	}
	rawPub, ok := doc.Names[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s: %s does not list the name %q", ErrNIP05, identifier, domain, name)
	}
	var pub string
	if err := json.Unmarshal(rawPub, &pub); err != nil || !nostr.IsValidPublicKey(pub) {
		return nil, fmt.Errorf("%w: %s: %s gives an invalid pubkey for %q (want 64 lowercase hex, not npub)", ErrNIP05, identifier, domain, name)
	}
	res := &NIP05Result{Name: name, Domain: domain, PubKey: pub}
	var relays map[string]json.RawMessage
	var listed []string
	if json.Unmarshal(doc.Relays, &relays) == nil {
		_ = json.Unmarshal(relays[pub], &listed) // not a list of strings: none
	}
	for _, rl := range listed {
		if CheckRelayURL(rl) == nil && len(res.Relays) < maxRelays {
			res.Relays = append(res.Relays, rl)
		}
	}
	sort.Strings(res.Relays)
	return res, nil
}
