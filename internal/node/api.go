package node

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Status is the answer of GET /v1/status.
type Status struct {
	Version string `json:"version"`
	Network string `json:"network"`
	PID     int    `json:"pid"`
	Owner   string `json:"owner,omitempty"`
	Npub    string `json:"npub,omitempty"`
	Handle  string `json:"handle,omitempty"`
	// HandleState is how this node's key stands with Handle: held,
	// revoked, rotated to KEY, or unsettled: WHY (see HandleHeld...).
	HandleState string `json:"handle_state,omitempty"`
	Open        bool   `json:"open"`
	RelayURL    string `json:"relay_url"`
	LND         string `json:"lnd,omitempty"`
	LNDState    string `json:"lnd_state,omitempty"` // reachable (alias), or the last error
	Uptime      string `json:"uptime"`
	Events      int64  `json:"events"`
}

// apiHandler is the local API. Every request must carry the token from the
// data dir's api.token as "Authorization: Bearer <token>".
func (n *Node) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := n.store.Stats(r.Context())
		if err != nil {
			apiError(w, http.StatusInternalServerError, err)
			return
		}
		var npub string
		if n.key != nil {
			npub = n.key.Npub()
		}
		var lndState string
		if n.pay != nil {
			ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
			h := n.pay.Health(ctx)
			cancel()
			switch {
			case h.LND != nil:
				lndState = fmt.Sprintf("reachable (%s, height %d, synced %v)", h.LND.Alias, h.LND.BlockHeight, h.LND.SyncedToChain)
			case h.LNDError != "":
				lndState = "unreachable: " + h.LNDError
			}
		}
		var handleState string
		if p := n.handleState.Load(); p != nil && n.cfg.Handle != "" {
			handleState = *p
		}
		writeJSON(w, Status{
			LNDState: lndState, HandleState: handleState,
			Npub: npub, Handle: n.cfg.Handle, LND: n.cfg.LND.RPCServer,
			Version: Version, Network: n.cfg.Network, PID: os.Getpid(),
			Owner: n.cfg.Relay.Owner, Open: n.cfg.Relay.Open, RelayURL: n.RelayURL(),
			Uptime: time.Since(n.started).Round(time.Second).String(), Events: st.Events,
		})
	})
	n.chatRoutes(mux)
	n.paymentRoutes(mux)
	n.anchorRoutes(mux)
	n.identityRoutes(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if subtle.ConstantTimeCompare([]byte(got), []byte(n.token)) != 1 {
			w.Header().Set("WWW-Authenticate", "Bearer")
			apiError(w, http.StatusUnauthorized, errors.New("missing or wrong API token (see api.token in the data dir)"))
			return
		}
		if h, pattern := mux.Handler(r); pattern == "" {
			// No route: the mux answers 404 or 405 in plain text (or
			// redirects a path to its clean form); say it in JSON.
			var rec noRoute
			h.ServeHTTP(&rec, r)
			switch rec.code {
			case http.StatusNotFound:
				apiError(w, rec.code, fmt.Errorf("no such endpoint: %s %s", r.Method, r.URL.Path))
				return
			case http.StatusMethodNotAllowed:
				w.Header().Set("Allow", rec.header.Get("Allow"))
				apiError(w, rec.code, fmt.Errorf("%s %s: use %s", r.Method, r.URL.Path, rec.header.Get("Allow")))
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

// noRoute records the status and headers of the mux's answer to a request
// no route matched.
type noRoute struct {
	header http.Header
	code   int
}

func (x *noRoute) Header() http.Header {
	if x.header == nil {
		x.header = http.Header{}
	}
	return x.header
}

func (x *noRoute) Write(b []byte) (int, error) {
	if x.code == 0 {
		x.code = http.StatusOK
	}
	return len(b), nil
}

func (x *noRoute) WriteHeader(code int) {
	if x.code == 0 {
		x.code = code
	}
}

// requires guards the handlers of a feature that may be off (no identity,
// no LND, no btcd): while on() is false they answer 409 with why.
func requires(on func() bool, why string) func(http.HandlerFunc) http.HandlerFunc {
	return func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if !on() {
				apiError(w, http.StatusConflict, errors.New(why))
				return
			}
			h(w, r)
		}
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func apiError(w http.ResponseWriter, code int, err error) {
	// A request's context ends when its client goes away (nobody reads
	// this) or when the node starts to stop (Node.stopping).
	if errors.Is(err, context.Canceled) {
		code, err = http.StatusServiceUnavailable, errors.New("the node is stopping")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

// loadOrCreateToken reads the API token, creating a random one (mode 0600)
// if there is none. A token file that others may read (a data dir copied
// without its modes) may have leaked: it is replaced by a new token, and
// replaced says so.
func loadOrCreateToken(path string) (tok string, replaced os.FileMode, err error) {
	fi, err := os.Stat(path)
	if err == nil && fi.Mode().Perm()&0o077 != 0 {
		replaced = fi.Mode().Perm()
	} else if err == nil {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", 0, fmt.Errorf("API token: %w", err)
		}
		if tok := strings.TrimSpace(string(b)); len(tok) >= 32 {
			return tok, 0, nil
		}
		return "", 0, fmt.Errorf("API token file %s is too short: delete it to make a new one", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", 0, fmt.Errorf("API token: %w", err)
	}
	var raw [32]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails
	tok = hex.EncodeToString(raw[:])
	if err := writeFileAtomic(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", 0, fmt.Errorf("API token: %w", err)
	}
	return tok, replaced, nil
}

// Client talks to a running node's local API, the way lncli talks to lnd.
type Client struct {
	BaseURL string
	Token   string
	HTTP    *http.Client
}

// Dial finds the node running on dataDir from its runtime file and token.
func Dial(dataDir string) (*Client, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, RuntimeFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no node is running on %s (start one with `anchorchat node`)", dataDir)
	}
	if err != nil {
		return nil, err
	}
	var rt Runtime
	if err := json.Unmarshal(b, &rt); err != nil {
		return nil, fmt.Errorf("bad runtime file %s: %w", filepath.Join(dataDir, RuntimeFile), err)
	}
	// A node killed without a clean stop leaves its runtime file behind.
	// Its port may since belong to someone else, who must not get the
	// token: only a live process of ours counts.
	if !processAlive(rt.PID) {
		return nil, fmt.Errorf("no node is running on %s: the runtime file names pid %d, which is gone (the node did not stop cleanly; start it again with `anchorchat node`)", dataDir, rt.PID)
	}
	tok, err := os.ReadFile(filepath.Join(dataDir, TokenFile))
	if err != nil {
		return nil, fmt.Errorf("API token: %w", err)
	}
	return &Client{BaseURL: rt.APIURL, Token: strings.TrimSpace(string(tok)), HTTP: &http.Client{Timeout: ClientTimeout}}, nil
}

// ClientTimeout bounds a request of Dial's client. It is well beyond the
// node's own bounds on its slowest answers (send --wait waits 30 s once the
// message is out, after its recipients are looked up; a file download gets
// 60 s), so that it only ends a wait on a node that is stuck.
const ClientTimeout = 5 * time.Minute

// Do sends a request to the API and decodes a JSON answer into out (if not nil).
func (c *Client) Do(ctx context.Context, method, path string, body io.Reader, out any) error {
	resp, err := c.Response(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Response sends a request and returns the node's successful answer, for
// the caller to read and close (a file download); errors are Do's.
func (c *Client) Response(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, c.transportError(ctx, method, path, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		var e struct{ Error string }
		_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		return nil, fmt.Errorf("node API: %s", e.Error)
	}
	return resp, nil
}

// transportError says what went wrong with a request that got no answer:
// interrupted, no answer in time (the node may still carry it out), or no
// node to talk to.
func (c *Client) transportError(ctx context.Context, method, path string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("the node did not answer %s %s within %v; it may still carry it out (see its log)", method, path, c.HTTP.Timeout)
	}
	return fmt.Errorf("node API unreachable (is the node running?): %w", err)
}

// Status asks the node for its status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var st Status
	return &st, c.Do(ctx, http.MethodGet, "/v1/status", nil, &st)
}
