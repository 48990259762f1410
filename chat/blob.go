package chat

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/anchorchat/anchorchat/internal/eventsig"
	"github.com/nbd-wtf/go-nostr"
)

// BlobDescriptor is the BUD-02 answer to an upload.
type BlobDescriptor struct {
	URL      string `json:"url"`
	SHA256   string `json:"sha256"`
	Size     int64  `json:"size"`
	Type     string `json:"type,omitempty"`
	Uploaded int64  `json:"uploaded"`
}

// BlobConfig configures a BlobStore.
type BlobConfig struct {
	Dir   string   // directory for blobs (created 0700); files are named by hash, 0600
	Owner string   // hex pubkey allowed to upload
	Allow []string // more pubkeys allowed to upload
	// MaxSize is the largest file accepted (default 32 MiB): a blob may be
	// blobOverhead (64) bytes larger, for the encryption's tag, so that one
	// limit serves here and as Config.MaxFileSize.
	MaxSize int64
	// PublicURL is the base URL the store is reachable at (as mounted),
	// used in descriptors; when empty it is derived from the request.
	PublicURL string
	Now       func() time.Time
	Logger    *slog.Logger
}

// BlobStore is a Blossom-style blob server (BUD-01 GET/HEAD /<sha256>[.ext],
// BUD-02 PUT /upload with a kind 24242 authorisation). Mount it with
// http.StripPrefix at the path in PublicURL, e.g. /blobs/.
type BlobStore struct {
	cfg     BlobConfig
	writers map[string]bool
}

// NewBlobStore creates the directory and returns the handler.
func NewBlobStore(cfg BlobConfig) (*BlobStore, error) {
	if cfg.Dir == "" {
		return nil, errors.New("chat: BlobConfig.Dir is required")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("chat: blob dir: %w", err)
	}
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = 32 << 20
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// An upload cut short by a crash leaves its temp file. Uploads last
	// minutes at most, so one an hour old is a leftover (a younger one may
	// belong to another process on this directory).
	if left, err := filepath.Glob(filepath.Join(cfg.Dir, ".upload-*")); err == nil {
		for _, f := range left {
			if st, err := os.Stat(f); err == nil && cfg.Now().Sub(st.ModTime()) > time.Hour {
				_ = os.Remove(f)
			}
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Logger = cfg.Logger.With("component", "blobs")
	b := &BlobStore{cfg: cfg, writers: map[string]bool{}}
	if cfg.Owner != "" {
		b.writers[cfg.Owner] = true
	}
	for _, a := range cfg.Allow {
		b.writers[a] = true
	}
	return b, nil
}

func blobError(w http.ResponseWriter, code int, reason string) {
	w.Header().Set("X-Reason", reason)
	http.Error(w, reason, code)
}

func (b *BlobStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	w.Header().Set("Access-Control-Allow-Headers", "Authorization, *")
	w.Header().Set("Access-Control-Allow-Methods", "GET, HEAD, PUT")
	p := strings.TrimPrefix(r.URL.Path, "/")
	switch {
	case r.Method == http.MethodOptions:
		w.WriteHeader(http.StatusNoContent)
	case p == "upload" && r.Method == http.MethodPut:
		b.upload(w, r)
	case p == "upload" && r.Method == http.MethodHead:
		w.WriteHeader(http.StatusOK) // BUD-06 pre-flight: uploads are possible
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		b.get(w, r, p)
	default:
		blobError(w, http.StatusMethodNotAllowed, "method not allowed")
	}
}

func isHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

func (b *BlobStore) path(sha string) string { return filepath.Join(b.cfg.Dir, sha) }

func (b *BlobStore) get(w http.ResponseWriter, r *http.Request, p string) {
	sha, _, _ := strings.Cut(p, ".")
	if !isHash(sha) {
		blobError(w, http.StatusNotFound, "not a blob hash")
		return
	}
	f, err := os.Open(b.path(sha))
	if err != nil {
		blobError(w, http.StatusNotFound, "blob not found")
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		blobError(w, http.StatusInternalServerError, "stat failed")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	http.ServeContent(w, r, "", st.ModTime(), f)
}

// checkAuth validates a BUD-01 authorisation header for verb and returns
// the event.
func (b *BlobStore) checkAuth(r *http.Request, verb string) (*nostr.Event, error) {
	h := r.Header.Get("Authorization")
	enc, ok := strings.CutPrefix(h, "Nostr ")
	if !ok {
		return nil, errors.New("missing Authorization: Nostr <base64 event>")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
	if err != nil {
		if raw, err = base64.RawURLEncoding.DecodeString(strings.TrimSpace(enc)); err != nil {
			return nil, errors.New("authorization is not base64")
		}
	}
	var evt nostr.Event
	if err := json.Unmarshal(raw, &evt); err != nil {
		return nil, errors.New("authorization is not a nostr event")
	}
	if evt.Kind != KindBlobAuth {
		return nil, fmt.Errorf("authorization kind %d is not %d", evt.Kind, KindBlobAuth)
	}
	if !eventsig.Valid(&evt) {
		return nil, errors.New("authorization signature invalid")
	}
	now := b.cfg.Now().Unix()
	if int64(evt.CreatedAt) > now+60 {
		return nil, errors.New("authorization created_at is in the future")
	}
	exp := Expiration(&evt)
	if exp == 0 || exp <= now {
		return nil, errors.New("authorization expired or without expiration")
	}
	if evt.Tags.FindWithValue("t", verb) == nil {
		return nil, fmt.Errorf("authorization is not for %q", verb)
	}
	if !b.writers[evt.PubKey] {
		return nil, errors.New("this pubkey may not upload here")
	}
	return &evt, nil
}

func (b *BlobStore) upload(w http.ResponseWriter, r *http.Request) {
	auth, err := b.checkAuth(r, "upload")
	if err != nil {
		blobError(w, http.StatusUnauthorized, err.Error())
		return
	}
	limit := b.cfg.MaxSize + blobOverhead
	if r.ContentLength > limit {
		blobError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("blob larger than %d bytes", limit))
		return
	}
	tmp, err := os.CreateTemp(b.cfg.Dir, ".upload-*")
	if err != nil {
		blobError(w, http.StatusInternalServerError, "cannot store")
		return
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	defer tmp.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r.Body, limit+1))
	if err != nil {
		blobError(w, http.StatusBadRequest, "reading body failed")
		return
	}
	if n > limit {
		blobError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("blob larger than %d bytes", limit))
		return
	}
	sha := hex.EncodeToString(h.Sum(nil))
	xs := auth.Tags.GetAll([]string{"x"})
	if len(xs) == 0 {
		blobError(w, http.StatusUnauthorized, "authorization has no x tag")
		return
	}
	if !slices.ContainsFunc(xs, func(t nostr.Tag) bool { return len(t) > 1 && t[1] == sha }) {
		blobError(w, http.StatusUnauthorized, "authorization x tag does not match the body's sha256")
		return
	}
	if err := tmp.Sync(); err != nil {
		blobError(w, http.StatusInternalServerError, "cannot store")
		return
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		blobError(w, http.StatusInternalServerError, "cannot store")
		return
	}
	if err := os.Rename(tmp.Name(), b.path(sha)); err != nil {
		blobError(w, http.StatusInternalServerError, "cannot store")
		return
	}
	base := b.cfg.PublicURL
	if base == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		base = scheme + "://" + r.Host // mounted under a prefix: set PublicURL
	}
	d := BlobDescriptor{
		URL: strings.TrimSuffix(base, "/") + "/" + sha, SHA256: sha, Size: n,
		Type: r.Header.Get("Content-Type"), Uploaded: b.cfg.Now().Unix(),
	}
	b.cfg.Logger.Info("blob stored", "sha256", sha, "size", n, "by", auth.PubKey)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(d)
}

// Delete removes a blob (the node may call it when a message is purged).
func (b *BlobStore) Delete(sha string) error {
	if !isHash(sha) {
		return errors.New("chat: not a blob hash")
	}
	err := os.Remove(b.path(sha))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
